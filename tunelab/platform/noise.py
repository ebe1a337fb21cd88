"""Deciding a winner under noise: one protocol for every timed comparison of every kind.

Timings are noisy, and on a shared machine the noise is load that comes and goes: the
fastest of 64 candidates measured once each is often not the fastest kernel. Every
comparison tunelab makes (pipeline-search's final rounds, graph-rewrite's speedups and
final rounds, the A/A test in `bench/aa.py`) is therefore made the same way:

1. **Paired, interleaved rounds** (`platform/rounds.py`): each round times every thing
   compared once, in a freshly shuffled order, so load that comes and goes falls on all
   of them alike. Round r of A and round r of B form a pair.
2. **Ratio of medians with a paired bootstrap interval** (`paired_ratio`): the rounds
   are resampled together (the pairs stay pairs) and the 95% interval of
   median(A) / median(B) is read off the resamples.
3. **A verdict** (`judge`): one side is faster only when the interval excludes 1.0 *and*
   the medians differ by more than the tie threshold (`TIE_TOLERANCE`); medians within
   the threshold are tied; anything else is undecided.

`decide` applies this to a job's finalists and baselines. Where samples are not paired
by round (a recorded sweep's repeats), the independent bootstrap (`ratio_ci`) is used.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

RESAMPLES = 2000
TIE_TOLERANCE = 0.01  # medians within 1% (and an interval containing 1.0) are a tie


def paired_ratio(
    numerator: Sequence[float], denominator: Sequence[float], *, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, tuple[float, float]]:  # fmt: skip
    """median(numerator) / median(denominator) and its `level` bootstrap interval, where
    numerator[r] and denominator[r] were measured in the same round r: rounds are
    resampled together, so what a round's load did to both stays paired."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired samples need equal, non-empty lengths: {a.shape}, {b.shape}")
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 2:
        return ratio, (ratio, ratio)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(RESAMPLES, len(a)))
    ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    tail = (1 - level) / 2 * 100
    return ratio, (float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail)))


def judge(ratio: float, ci: tuple[float, float], tolerance: float = TIE_TOLERANCE) -> str:
    """The verdict on a time ratio other/reference with its interval: `faster` (other is
    faster) or `slower` only when the interval excludes 1.0 and the medians differ by
    more than `tolerance`; `tied` when they differ by at most that; else `undecided`."""
    lo, hi = ci
    if abs(ratio - 1.0) <= tolerance:
        return "tied"
    if hi < 1.0:
        return "faster"
    if lo > 1.0:
        return "slower"
    return "undecided"


def median_ci(
    samples: Sequence[float], *, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The `level` bootstrap confidence interval of the median of `samples`."""
    x = np.asarray(samples, dtype=float)
    if len(x) < 2:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(x, size=(RESAMPLES, len(x)), replace=True), axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))


def ratio_ci(
    numerator: Sequence[float], denominator: Sequence[float], *, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:  # fmt: skip
    """The `level` bootstrap confidence interval of median(numerator) / median(denominator),
    resampling both independently."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    rng = np.random.default_rng(seed)
    ma = np.median(rng.choice(a, size=(RESAMPLES, len(a)), replace=True), axis=1)
    mb = np.median(rng.choice(b, size=(RESAMPLES, len(b)), replace=True), axis=1)
    ratios = ma / mb
    tail = (1 - level) / 2 * 100
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


@dataclass(frozen=True)
class Ratio:
    """A time ratio other/reference from paired rounds: its value (ratio of medians), its
    bootstrap interval, the rounds it rests on and the verdict (`judge`). As a speedup
    (reference/other) it is `1 / ratio`, with the interval's ends swapped."""

    ratio: float
    ci: tuple[float, float]
    rounds: int
    outcome: str  # faster (other is), slower, tied, undecided

    def speedup(self) -> tuple[float, tuple[float, float]]:
        """reference / other and its interval."""
        return 1.0 / self.ratio, (1.0 / self.ci[1], 1.0 / self.ci[0])


@dataclass(frozen=True)
class Comparison:
    """One finalist (or baseline) against the winner: median ratio other/winner."""

    key: str
    median_s: float
    ratio: float
    ci: tuple[float, float]
    outcome: str  # finalists: tied, slower, undecided; baselines: win, loss, tied, undecided


@dataclass(frozen=True)
class Verdict:
    """Who won the final rounds, who is tied with the winner, and how the baselines
    compare (baseline median / winner median: above 1 = the winner is faster)."""

    winner: str
    winner_median_s: float
    rounds: int
    finalists: list[Comparison] = field(default_factory=list)
    baselines: list[Comparison] = field(default_factory=list)

    @property
    def tied(self) -> list[Comparison]:
        return [c for c in self.finalists if c.outcome == "tied"]

    @property
    def settled(self) -> bool:
        """No finalist is undecided: more rounds would not change the verdict."""
        return all(c.outcome != "undecided" for c in self.finalists)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    samples: Mapping[str, Sequence[float]],
    baselines: Mapping[str, Sequence[float]] | None = None,
    *,
    rounds: int,
    seed: int = 0,
    paired: bool = False,
    tolerance: float = TIE_TOLERANCE,
) -> Verdict:
    """The verdict over every finalist's samples (and the baselines').

    `paired`: sample r of every finalist and baseline was measured in round r (the
    protocol above: `paired_ratio`); otherwise samples are pooled repeats, resampled
    independently (`ratio_ci`). Finalists are tied with the winner, slower, or
    undecided; baselines are a win (the winner is faster), a loss, tied or undecided."""
    medians = {k: statistics.median(v) for k, v in samples.items()}
    winner = min(medians, key=lambda k: (medians[k], k))
    best = samples[winner]

    def compare(xs: Sequence[float], s: int) -> tuple[float, tuple[float, float]]:
        if paired:
            return paired_ratio(xs, best, seed=s)
        return statistics.median(xs) / medians[winner], ratio_ci(xs, best, seed=s)

    finalists = []
    for i, (key, xs) in enumerate(sorted(samples.items(), key=lambda kv: medians[kv[0]])):
        if key == winner:
            continue
        ratio, ci = compare(xs, seed + i)
        # The winner has the lowest median, so a finalist is never `faster` than it.
        outcome = {"faster": "undecided"}.get(o := judge(ratio, ci, tolerance), o)
        finalists.append(Comparison(key, medians[key], ratio, ci, outcome))
    compared = []
    for i, (key, xs) in enumerate(sorted((baselines or {}).items())):
        ratio, ci = compare(xs, seed + 1000 + i)
        # baseline / winner: `slower` (the baseline is) is the winner's win.
        outcome = {"slower": "win", "faster": "loss"}.get(o := judge(ratio, ci, tolerance), o)
        compared.append(Comparison(key, statistics.median(xs), ratio, ci, outcome))
    return Verdict(winner, medians[winner], rounds, finalists, compared)
