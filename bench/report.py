"""How a benchmark reports: print the table, and write it to --out (bench/results/)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def emit(lines: list[str], out: Path | None) -> None:
    """Print a benchmark's report; with `out`, also write it there."""
    text = "\n".join(lines)
    print(text)
    if out:
        out.write_text(text + "\n")


def sample(run: Callable[[], Any], seconds: float) -> float:
    """Seconds per call of `run`, called back to back for at least `seconds`."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run()
        n += 1
    return (time.perf_counter() - t0) / n
