"""Paired, interleaved rounds: how every kind times the things it compares.

`interleaved` runs each callable once per round, in an order shuffled afresh every
round (a seeded permutation, so a run can be repeated), each sample long enough for the
clock (`min_sample_s`: a fast callable repeats within one sample). Sample r of every
callable comes from round r: `noise.paired_ratio` and `noise.decide(paired=True)` read
them as pairs. Before each round `before_round` may run (the node-health guard's wait,
`platform/health.py`); what it returns is kept per round.

The thread count is the caller's (the platform's measurement policy sets it once per
worker process and records it with every trial).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunelab.platform import noise

MAX_INNER = 1000  # runs per sample at most, however fast the callable
PROBES = 3  # timed runs of each callable to size its samples (the fastest counts)


@dataclass
class Rounds:
    """Per-round seconds of each callable (`seconds[key][r]`: round r), whatever the
    `before_round` hook returned for each round, and the runs of each callable timed
    together as one sample."""

    seconds: dict[str, list[float]]
    notes: list[Any] = field(default_factory=list)
    inner: dict[str, int] = field(default_factory=dict)

    def median(self, key: str) -> float:
        return float(np.median(self.seconds[key]))

    def ratio(self, numerator: str, denominator: str, *, seed: int = 0) -> noise.Ratio:
        """median(numerator) / median(denominator) with its paired bootstrap interval
        and the protocol's verdict on it (`noise.judge`)."""
        value, ci = noise.paired_ratio(
            self.seconds[numerator], self.seconds[denominator], seed=seed
        )
        return noise.Ratio(value, ci, len(self.seconds[numerator]), noise.judge(value, ci))


def inner_counts(
    runs: Mapping[str, Callable[[], Any]],
    min_sample_s: float,
    sync: Callable[[], None],
    probes: int = PROBES,
) -> dict[str, int]:
    """How many runs of each callable make one sample of at least `min_sample_s`, from
    the fastest of `probes` timed runs: one run's time on a busy node could be a stall,
    and two identical callables would then be timed with samples of different lengths
    (which differ under load: the A/A test, `bench/aa.py`, called such a pair faster)."""
    inner = {}
    for key, run in runs.items():
        once = float("inf")
        for _ in range(probes):
            t0 = time.perf_counter()
            run()
            sync()
            once = min(once, time.perf_counter() - t0)
        inner[key] = max(1, min(MAX_INNER, int(min_sample_s / max(once, 1e-7))))
    return inner


def interleaved(
    runs: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    min_sample_s: float = 2e-3,
    seed: int = 0,
    sync: Callable[[], None] = lambda: None,
    before_round: Callable[[int], Any] | None = None,
) -> Rounds:
    """Time every callable of `runs` over `rounds` paired rounds, order shuffled each
    round; returns seconds per run of each callable, per round."""
    if rounds < 1 or not runs:
        raise ValueError("interleaved rounds need at least one round and one callable")
    keys = list(runs)
    for key in keys:
        for _ in range(warmup):
            runs[key]()
    sync()
    inner = inner_counts(runs, min_sample_s, sync)
    rng = np.random.default_rng(seed)
    out = Rounds({k: [] for k in keys}, inner=inner)
    for r in range(rounds):
        if before_round is not None:
            out.notes.append(before_round(r))
        for i in rng.permutation(len(keys)):
            key = keys[int(i)]
            run, n = runs[key], inner[key]
            t0 = time.perf_counter()
            for _ in range(n):
                run()
            sync()
            out.seconds[key].append((time.perf_counter() - t0) / n)
    return out
