"""Writing a benchmark's results: JSON, a markdown table and a PNG plot under benchmarks/results/."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def argument_parser(doc: str, large_help: str) -> argparse.ArgumentParser:
    """Returns a parser with the options every benchmark takes: ``--large`` (``large_help`` says what grows) and
    ``--out`` (the results folder)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help=large_help)
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    return parser


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Returns a GitHub markdown table; floats are shown with 4 significant digits."""

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(name: str, payload: dict, table: str, figure, out_dir: Path | None = None) -> dict[str, Path]:
    """Writes ``name.json`` (payload plus date), ``name.md`` (title, context, table) and ``name.png`` (figure).

    Returns the paths written.
    """
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    payload = {"date": datetime.date.today().isoformat(), **payload}
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(payload, indent=2, default=float) + "\n")
    header = f"# {name}\n\n- device: {payload.get('device', '?')}\n- date: {payload['date']}\n"
    if "command" in payload:
        header += f"- command: `{payload['command']}`\n"
    paths["md"].write_text(header + "\n" + table)
    figure.savefig(paths["png"], dpi=120, bbox_inches="tight")
    return paths


def publish(name: str, payload: dict, table: str, figure, out_dir: Path | None = None) -> dict[str, Path]:
    """Writes the results as :func:`write` does, then prints the table and the paths written; returns the paths."""
    paths = write(name, payload, table, figure, out_dir)
    print(table)
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return paths
