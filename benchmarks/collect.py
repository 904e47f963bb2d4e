"""Copies every benchmark's latest table into docs/results.md, between ``<!-- results:NAME -->`` markers (NAME may
name a results subfolder's table: ``lopt_ladder_1000/lopt_ladder``).

    python -m benchmarks.collect           # rewrite the tables in docs/results.md
    python -m benchmarks.collect --check   # exit 1 when docs/results.md is out of date

The prose around the markers (what the numbers mean and how they compare with the papers) is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from benchmarks.report import RESULTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"
MARKER = re.compile(r"<!-- results:(?P<name>[\w/-]+) -->\n.*?<!-- /results:(?P=name) -->", re.DOTALL)


def section(name: str) -> str:
    """Returns the marked block for benchmark ``name``: its markdown without the title, then its plot."""
    path = RESULTS / f"{name}.md"
    if not path.exists():
        raise FileNotFoundError(f"docs/results.md names benchmark {name!r}, but {path} does not exist; run it first.")
    body = path.read_text().split("\n", 1)[1].strip()
    return f"<!-- results:{name} -->\n{body}\n\n![{name}](results/{name}.png)\n<!-- /results:{name} -->"


def render(text: str) -> str:
    """Returns ``text`` with every marked block replaced by the benchmark's current results."""
    return MARKER.sub(lambda m: section(m.group("name")), text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether docs/results.md is current")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    fresh = render(text)
    missing = sorted(p.stem for p in RESULTS.glob("*.md") if f"<!-- results:{p.stem} -->" not in text)
    if args.check:
        stale = fresh != text
        if stale or missing:
            print(f"docs/results.md is out of date (stale tables: {stale}; benchmarks not shown: {missing}); "
                  "run python -m benchmarks.collect and describe any new benchmark.")
            return 1
        return 0
    DOC.write_text(fresh)
    if missing:
        print(f"benchmarks not yet in docs/results.md (add a section with a marker): {missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
