"""End-to-end runtime of whole graphs, measured as a performance engineer would: the
graphs compared are run interleaved (round r times each of them back to back, in an
order that alternates), each sample long enough for the clock, and the result is the
ratio of medians with the spread of the per-round ratios.

The thread count is the worker's (the platform's measurement policy sets it once per
worker process; it is recorded with every trial).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Comparison:
    """Per-round seconds of each graph (one list per graph, in the order given)."""

    seconds: list[list[float]]

    def medians(self) -> list[float]:
        return [statistics.median(s) for s in self.seconds]

    def speedup(self, base: int = 0, other: int = 1) -> float:
        """median(base) / median(other): above 1 means `other` is faster."""
        m = self.medians()
        return m[base] / m[other]

    def ratio_spread(self, base: int = 0, other: int = 1) -> tuple[float, float]:
        """The 10th and 90th percentiles of the per-round ratios base/other."""
        r = np.asarray(self.seconds[base]) / np.asarray(self.seconds[other])
        return float(np.percentile(r, 10)), float(np.percentile(r, 90))


def interleaved(
    runs: Sequence[Callable[[], Any]],
    *,
    rounds: int = 15,
    warmup: int = 2,
    min_sample_s: float = 2e-3,
    sync: Callable[[], None] = lambda: None,
) -> Comparison:
    """Time every callable in `runs`, interleaved over `rounds` rounds (the order
    alternates each round so no graph always runs first)."""
    for run in runs:
        for _ in range(warmup):
            run()
    sync()
    inner = []
    for run in runs:
        t0 = time.perf_counter()
        run()
        sync()
        once = max(time.perf_counter() - t0, 1e-7)
        inner.append(max(1, min(100, int(min_sample_s / once))))
    seconds: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for r in range(rounds):
        for i in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for _ in range(inner[i]):
                runs[i]()
            sync()
            seconds[i].append((time.perf_counter() - t0) / inner[i])
    return Comparison(seconds)
