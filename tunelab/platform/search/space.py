"""Candidate spaces: listed, or generated on demand when they are too large to list.

A space is indexed 0..len-1 and hands out a candidate's parameters by index; strategies
never need the whole list. A kind's `space()` may return a plain list (wrapped in
`ListSpace`), a `ProductSpace` (every combination of some axes, decoded from the index
in mixed radix: 10^9 candidates cost nothing), or its own `Space` subclass.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from tunelab.platform.kinds import candidate_key

# Up to this many candidates a space may be listed in full by strategies that rank or
# permute all of it (the model strategy, the random permutation).
LISTABLE = 1 << 20


class Space(ABC):
    """An indexed set of candidates."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def params(self, i: int) -> dict[str, Any]:
        """The parameters of candidate `i`."""

    def key(self, i: int) -> str:
        """The identity of candidate `i` within a job (a hash of its parameters)."""
        return candidate_key(self.params(i))

    def listable(self) -> bool:
        return len(self) <= LISTABLE


class ListSpace(Space):
    """A space given as a list of parameter dicts, in the kind's order."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)
        self._keys: list[str] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def params(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def key(self, i: int) -> str:
        if self._keys is None:
            self._keys = [candidate_key(p) for p in self.items]
        return self._keys[i]


class ProductSpace(Space):
    """Every combination of the axes' values; index i decodes in mixed radix (the last
    axis varies fastest), so nothing is listed."""

    def __init__(self, axes: Mapping[str, Sequence[Any]]) -> None:
        if not axes or any(len(v) == 0 for v in axes.values()):
            raise ValueError("a product space needs at least one axis, none of them empty")
        self.names = list(axes)
        self.values = [list(v) for v in axes.values()]
        self.size = math.prod(len(v) for v in self.values)

    def __len__(self) -> int:
        return self.size

    def params(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.size:
            raise IndexError(i)
        out: dict[str, Any] = {}
        for name, values in zip(reversed(self.names), reversed(self.values), strict=True):
            i, r = divmod(i, len(values))
            out[name] = values[r]
        return {name: out[name] for name in self.names}


def as_space(space: Space | Sequence[dict[str, Any]]) -> Space:
    """A kind's space as a `Space` (lists are wrapped)."""
    return space if isinstance(space, Space) else ListSpace(space)
