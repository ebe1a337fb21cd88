"""Search strategies: which candidates to evaluate, a batch at a time.

A strategy's plan is a pure function of the space, the search settings and the trials
already recorded, so a resumed job continues exactly where the dead driver stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from tunelab.platform.kinds import candidate_key
from tunelab.platform.spec import SearchSpec


class SearchStrategy(ABC):
    """Proposes batches of candidates from a fixed space."""

    def __init__(self, space: list[dict[str, Any]], search: SearchSpec) -> None:
        self.space = space
        self.search = search
        self.keys = [candidate_key(p) for p in space]

    @property
    def total(self) -> int:
        """How many trials the job will have when it is done."""
        return min(self.search.budget or len(self.space), len(self.space))

    @abstractmethod
    def propose(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        """Up to `n` (key, params) not in `exclude` (recorded or in flight); [] when done."""


class _OrderedStrategy(SearchStrategy):
    """Walks a fixed order of the space and plans its first `total` candidates."""

    def __init__(self, space: list[dict[str, Any]], search: SearchSpec) -> None:
        super().__init__(space, search)
        self.plan = self.order()[: self.total]
        self._cursor = 0

    @abstractmethod
    def order(self) -> list[int]: ...

    def propose(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        while self._cursor < len(self.plan) and len(out) < n:
            idx = self.plan[self._cursor]
            self._cursor += 1
            if self.keys[idx] not in exclude:
                out.append((self.keys[idx], self.space[idx]))
        return out


class Exhaustive(_OrderedStrategy):
    """Every candidate in the kind's order (up to the budget)."""

    def order(self) -> list[int]:
        return list(range(len(self.space)))


class RandomSearch(_OrderedStrategy):
    """A seeded random permutation: the same seed gives the same trials."""

    def order(self) -> list[int]:
        rng = np.random.default_rng(self.search.seed)
        return [int(i) for i in rng.permutation(len(self.space))]


STRATEGIES: dict[str, type[SearchStrategy]] = {
    "exhaustive": Exhaustive,
    "random": RandomSearch,
}


def make_strategy(space: list[dict[str, Any]], search: SearchSpec) -> SearchStrategy:
    return STRATEGIES[search.strategy](space, search)
