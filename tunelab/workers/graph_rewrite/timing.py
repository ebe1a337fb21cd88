"""End-to-end speedups of whole graphs, on the platform's measurement protocol: the
original and the final graph timed in paired rounds, order shuffled each round
(`platform.rounds.interleaved`), and the speedup original/final read as the ratio of
medians with its paired bootstrap interval and verdict (`noise.paired_ratio`,
`noise.judge`). Nothing here times anything itself: one definition, the platform's.

The thread count is the worker's (the platform's measurement policy sets it once per
worker process; it is recorded with every trial).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab.platform.rounds import Rounds, interleaved

ORIGINAL, FINAL = "original", "final"


@dataclass(frozen=True)
class Speedup:
    """original/final as a speedup (above 1: the final graph is faster), its 95%
    interval, the verdict from the final graph's point of view (`faster`, `slower`,
    `tied`, `undecided`), the rounds it rests on and both medians."""

    value: float
    ci: tuple[float, float]
    verdict: str
    rounds: int
    original_s: float
    final_s: float

    def info(self) -> dict[str, Any]:
        """What a trial records of it (beside the speedup objective itself)."""
        return {
            "speedup_ci": [self.ci[0], self.ci[1]],
            "speedup_verdict": self.verdict,
            "original_latency_s": self.original_s,
            "rounds": self.rounds,
        }


def speedup_of(rounds: Rounds, reference: str, other: str, *, seed: int = 0) -> Speedup:
    """The speedup reference/other from paired rounds (`other` faster: above 1)."""
    ratio = rounds.ratio(other, reference, seed=seed)
    value, ci = ratio.speedup()
    return Speedup(
        value, ci, ratio.outcome, ratio.rounds, rounds.median(reference), rounds.median(other)
    )


def compare(
    original: Callable[[], Any],
    final: Callable[[], Any],
    *,
    rounds: int,
    min_sample_s: float,
    seed: int = 0,
    warmup: int = 2,
) -> Speedup:
    """The original and the final graph's runs timed in `rounds` paired, shuffled rounds."""
    timed = interleaved(
        {ORIGINAL: original, FINAL: final},
        rounds=rounds,
        warmup=warmup,
        min_sample_s=min_sample_s,
        seed=seed,
    )
    return speedup_of(timed, ORIGINAL, FINAL, seed=seed)
