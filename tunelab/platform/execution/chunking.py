"""How many candidates go into one Ray call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class _Timed(Protocol):
    seconds: float


class Chunker:
    """How many candidates go into one Ray call for one phase.

    Cheap evaluations are sent in chunks so that Ray's per-call cost does not dominate;
    a chunk aims to take about TARGET_S. Expensive ones go one at a time, which keeps
    timeouts and crash blame per candidate. A chunk that fails as a whole is split.
    """

    TARGET_S = 0.2
    MAX = 64

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self.size = fixed or 1

    def observe(self, outcomes: Sequence[_Timed]) -> None:
        if self.fixed:
            return
        per = sum(o.seconds for o in outcomes) / max(len(outcomes), 1)
        self.size = max(1, min(self.MAX, int(self.TARGET_S / max(per, 1e-4))))

    def failed(self) -> None:
        self.size = 1
