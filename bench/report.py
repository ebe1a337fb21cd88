"""How a benchmark reports: print the table, and write it to --out (bench/results/)."""

from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: Path | None) -> None:
    """Print a benchmark's report; with `out`, also write it there."""
    text = "\n".join(lines)
    print(text)
    if out:
        out.write_text(text + "\n")
