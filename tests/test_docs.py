"""The docs build without warnings, and docs/results.md shows every benchmark's latest table."""

import subprocess
import sys
from pathlib import Path

from benchmarks import collect

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strictly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    api = (tmp_path / "site" / "api" / "hetnet" / "index.html").read_text()
    assert 'id="hetnet.attention.sparse.attend"' in api and 'id="hetnet.hyperset.iterate"' in api


def test_results_page_is_current():
    assert collect.main(["--check"]) == 0
