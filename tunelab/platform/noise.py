"""Deciding a winner under noise: bootstrap confidence intervals and ties.

Timings are noisy: the fastest of 64 candidates measured once each is often not the
fastest kernel. A job's finalists are therefore measured again, interleaved, in rounds;
from every repeat of every round the verdict takes, for each finalist, the 95% bootstrap
confidence interval of the ratio of its median to the leader's. Two candidates are tied
when that interval contains 1.0 and their medians differ by at most 1%; a finalist is
slower when the interval lies above 1.0; anything else is undecided, and another round
is measured while rounds remain.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

RESAMPLES = 2000
TIE_TOLERANCE = 0.01  # medians within 1% (and an interval containing 1.0) are a tie


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
class Comparison:
    """One finalist (or baseline) against the winner: median ratio other/winner."""

    key: str
    median_s: float
    ratio: float
    ci: tuple[float, float]
    outcome: str  # finalists: tied, slower, undecided; baselines: win, loss, undecided


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
) -> Verdict:
    """The verdict over every finalist's pooled repeats (and the baselines')."""
    medians = {k: statistics.median(v) for k, v in samples.items()}
    winner = min(medians, key=lambda k: (medians[k], k))
    best = samples[winner]
    finalists = []
    for i, (key, xs) in enumerate(sorted(samples.items(), key=lambda kv: medians[kv[0]])):
        if key == winner:
            continue
        lo, hi = ratio_ci(xs, best, seed=seed + i)
        ratio = medians[key] / medians[winner]
        if lo <= 1.0 <= hi and abs(ratio - 1) <= TIE_TOLERANCE:
            outcome = "tied"
        elif lo > 1.0:
            outcome = "slower"
        else:
            outcome = "undecided"
        finalists.append(Comparison(key, medians[key], ratio, (lo, hi), outcome))
    compared = []
    for i, (key, xs) in enumerate(sorted((baselines or {}).items())):
        lo, hi = ratio_ci(xs, best, seed=seed + 1000 + i)
        ratio = statistics.median(xs) / medians[winner]
        # win: the job's winner is faster than the baseline, beyond the noise.
        outcome = "win" if lo > 1.0 else "loss" if hi < 1.0 else "undecided"
        compared.append(Comparison(key, statistics.median(xs), ratio, (lo, hi), outcome))
    return Verdict(winner, medians[winner], rounds, finalists, compared)
