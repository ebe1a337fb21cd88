"""Objectives, and what "best" means: the one definition every ranking calls.

A kind declares its objectives (name and direction), the primary one first. A trial's
`value` is its primary objective; the job's best is the `ok`, non-baseline trial whose
value is best in the job's direction. The recorder, the CLI, the API, exports, the
dashboard and the benches all rank through the functions here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunelab.schema.models import Direction, Trial, TrialStatus

LATENCY = "latency_s"


@dataclass(frozen=True)
class Objective:
    """A named quantity a trial reports, and which way it improves."""

    name: str
    direction: Direction = Direction.minimize
    unit: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction(self.direction))


LATENCY_OBJECTIVE = Objective(LATENCY, Direction.minimize, "s")


def better(a: float | None, b: float | None, direction: Direction | str) -> bool:
    """Whether value `a` beats `b` (a missing value never beats anything)."""
    if a is None or not math.isfinite(a):
        return False
    if b is None or not math.isfinite(b):
        return True
    return a < b if Direction(direction) == Direction.minimize else a > b


def best_of(values: list[float | None], direction: Direction | str) -> float | None:
    best: float | None = None
    for v in values:
        if better(v, best, direction):
            best = v
    return best


def oriented(value: float, direction: Direction | str) -> float:
    """`value` turned into a cost (smaller is better) for code that minimises."""
    return value if Direction(direction) == Direction.minimize else -value


def objective_values(
    latencies_s: list[float] | None, reported: Mapping[str, Any] | None
) -> dict[str, float]:
    """Every named objective of a result: what the kind reported, plus `latency_s` (the
    median repeat) when it timed the candidate and did not report that itself."""
    values = {k: float(v) for k, v in (reported or {}).items() if v is not None}
    if latencies_s and LATENCY not in values:
        values[LATENCY] = statistics.median(latencies_s)
    return values


# -- SQL --------------------------------------------------------------------------------


def rankable() -> Any:
    """SQL: trials that can be a job's best: ok, with a value, not a library baseline."""
    return (Trial.status == TrialStatus.ok) & Trial.value.is_not(None) & Trial.baseline.is_(None)


def best_first(direction: Direction | str) -> Any:
    """SQL ORDER BY term: the best value first, ties by trial id (the earlier wins)."""
    if Direction(direction) == Direction.minimize:
        return (Trial.value.asc(), Trial.id.asc())
    return (Trial.value.desc(), Trial.id.asc())
