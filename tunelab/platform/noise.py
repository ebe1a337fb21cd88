"""Deciding a winner under noise: one protocol for every timed comparison of every kind.

Timings are noisy, and on a shared machine the noise is load that comes and goes: the
fastest of 64 candidates measured once each is often not the fastest kernel. Every
comparison tunelab makes (pipeline-search's final rounds, graph-rewrite's speedups and
final rounds, the A/A test in `bench/aa.py`) is therefore made the same way:

1. **Paired, interleaved rounds** (`platform/rounds.py`): each round times every thing
   compared once, in a freshly shuffled order, so load that comes and goes falls on all
   of them alike. Round r of A and round r of B form a pair.
2. **Ratio of medians with a paired interval** (`paired_ratio`): the rounds are
   resampled together (the pairs stay pairs) and the 95% bootstrap interval of
   median(A) / median(B) is read off the resamples; it is widened to hold the sign-test
   interval of the per-round ratios A_r / B_r (`sign_interval`). A bootstrap interval
   from few rounds is too narrow (the A/A test, `bench/aa.py`, called a thing faster
   than itself in 6-8% of runs of 5-8 rounds); the sign-test interval is exact whatever
   the load does, because each round's order is a fair coin: a thing against itself is
   called faster or slower in at most 5% of comparisons. It needs at least
   `MIN_PAIRED_ROUNDS` (6) rounds to exclude 1.0 at 95%; from fewer, the interval is
   stretched to 1.0 and nothing is decided.
3. **A verdict** (`judge`): one side is faster only when the interval excludes 1.0 *and*
   the medians differ by more than the tie threshold (`TIE_TOLERANCE`); medians within
   the threshold are tied; anything else is undecided.

`decide` applies this to a job's finalists and baselines. Where samples are not paired
by round (a recorded sweep's repeats), the independent bootstrap (`ratio_ci`) is used.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

RESAMPLES = 2000
TIE_TOLERANCE = 0.01  # medians within 1% are a tie, however sure the interval is of the gap
MIN_PAIRED_ROUNDS = 6  # the fewest paired rounds whose sign-test interval can exclude 1.0


def paired_ratio(
    numerator: Sequence[float], denominator: Sequence[float], *, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, tuple[float, float]]:  # fmt: skip
    """median(numerator) / median(denominator) and its `level` interval, where
    numerator[r] and denominator[r] were measured in the same round r: the paired
    bootstrap (rounds resampled together, so what a round's load did to both stays
    paired), widened to hold the sign-test interval of the per-round ratios."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired samples need equal, non-empty lengths: {a.shape}, {b.shape}")
    ratio = float(np.median(a) / np.median(b))
    sign = sign_interval(a / b, level=level)
    if sign is None:  # too few rounds to exclude 1.0 at this level
        lo, hi = float(np.min(a / b)), float(np.max(a / b))
        return ratio, (min(lo, ratio, 1.0), max(hi, ratio, 1.0))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(RESAMPLES, len(a)))
    ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))
    return ratio, (min(lo, sign[0]), max(hi, sign[1]))


def sign_interval(ratios: Sequence[float], *, level: float = 0.95) -> tuple[float, float] | None:
    """The distribution-free `level` interval of the median of per-round ratios: order
    statistics k and n+1-k, k the largest whose two-sided sign test keeps `level` (None
    when even the smallest and largest ratio do not: fewer than `MIN_PAIRED_ROUNDS` at
    95%). Exact when each ratio is as likely above as below the true median, which a
    shuffled order per round makes so for two identical things, whatever the load."""
    r = np.sort(np.asarray(ratios, dtype=float))
    n, k, below = len(r), 0, 0.0
    for j in range(n):  # k = j + 1 is allowed while 2 P(Binomial(n, 1/2) <= j) <= 1 - level
        below += math.comb(n, j) / 2.0**n
        if 2 * below > 1 - level + 1e-12:
            break
        k = j + 1
    if k == 0:
        return None
    return float(r[k - 1]), float(r[n - k])


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
