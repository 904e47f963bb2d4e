"""The docs build without warnings, every inline Python block in the README and the guide runs, and docs/results.md
shows every benchmark's latest table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import collect

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strictly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    api = (tmp_path / "site" / "api" / "hetnet" / "index.html").read_text()
    assert 'id="hetnet.attention.sparse.attend"' in api and 'id="hetnet.hyperset.HyperSET.iterate"' in api


def python_blocks(path: Path) -> list[str]:
    """Returns the inline ```python blocks of a markdown file (snippet includes are the examples, tested there)."""
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    return [b for b in blocks if not b.lstrip().startswith("--8<--")]


DOC_PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guide").glob("*.md"))]


@pytest.mark.parametrize("page", [p for p in DOC_PAGES if python_blocks(ROOT / p)])
def test_every_python_block_runs(page, tmp_path):
    """A page's blocks run in order in one fresh interpreter, as a reader would paste them (files land in a temp
    dir), so a page that leans on an import made elsewhere fails."""
    script = tmp_path / "page.py"
    blocks = python_blocks(ROOT / page)
    # The pages' multi-device blocks run on four virtual CPU devices, as the test session does.
    setup = 'import jax\njax.config.update("jax_num_cpu_devices", 4)\n'
    script.write_text(setup + "\n".join(f"# --- {page}, python block {i}\n{b}" for i, b in enumerate(blocks)))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, f"{page} failed in a fresh interpreter:\n{run.stderr[-4000:]}"


def test_results_page_is_current():
    assert collect.main(["--check"]) == 0
