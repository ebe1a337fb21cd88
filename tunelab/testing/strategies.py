"""A search strategy installed through the `tunelab.strategies` entry point, as a
third-party package would install one: hill climbing in index space, with options."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tunelab.platform.objectives import better
from tunelab.platform.search.strategies import SearchStrategy


class HillOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strides: list[int] = Field(
        default_factory=lambda: [1], min_length=1, description="index steps to neighbours"
    )
    starts: int = Field(1, ge=1, description="random starting points in the first batch")


class HillClimb(SearchStrategy):
    """Starts at random candidates, then asks for the index-space neighbours (plus and
    minus each stride) of the best candidate found so far, widening the stride when all
    of them were tried. Job-level steps report the best value after each result."""

    name = "testing-hill"
    options_model = HillOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(self.search.seed)
        self.index: dict[str, int] = {}
        self.best_key: str | None = None
        self.asked = 0
        self.results = 0

    def ask(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        n = min(n, self.total - self.asked)
        size = len(self.space)
        out: list[tuple[str, dict[str, Any]]] = []
        seen = set(exclude) | set(self.observed)
        if self.best_key is None:
            candidates = [int(i) for i in self.rng.integers(size, size=self.options.starts)]
        else:
            centre = self.index[self.best_key]
            candidates = [
                centre + sign * stride * scale
                for scale in (1, 2, 4, 8, 16, 32)
                for stride in self.options.strides
                for sign in (1, -1)
            ]
        for i in candidates:
            if len(out) >= n:
                break
            if not 0 <= i < size:
                continue
            key = self.space.key(i)
            if key in seen:
                continue
            seen.add(key)
            self.index[key] = i
            out.append((key, self.space.params(i)))
        while len(out) < n:  # a local optimum: jump somewhere new
            i = int(self.rng.integers(size))
            key = self.space.key(i)
            if key not in seen:
                seen.add(key)
                self.index[key] = i
                out.append((key, self.space.params(i)))
        self.asked += len(out)
        return out

    def tell(self, key: str, value: float | None, params: dict[str, Any] | None = None) -> None:
        super().tell(key, value, params)
        self.results += 1
        if key in self.index and (
            self.best_key is None or better(value, self.observed.get(self.best_key), self.direction)
        ):
            self.best_key = key
        if self.context is not None and self.best_key is not None:
            self.context.report(self.results, {"best": self.observed[self.best_key]})
