"""Search strategies: which candidates to evaluate, a batch at a time.

Exhaustive and random plans are pure functions of the space, the search settings and the
trials already recorded, so a resumed job continues exactly where the dead driver
stopped. The model strategy, resumed, refits its model on everything recorded and goes
on from there (its exploration draws restart from the seed).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from tunelab.platform.cost_model import ANALYTICAL, XGBCostModel, feature_matrix
from tunelab.platform.kinds import candidate_key
from tunelab.platform.spec import SearchSpec

Featurize = Callable[[dict[str, Any]], "dict[str, float] | None"]


class Prediction(NamedTuple):
    """A predicted cost, which model made it, and that model's version (fits so far;
    0 for models that are not fitted). Trials record these as predicted_cost,
    extra.model and extra.model_version."""

    seconds: float
    model: str
    version: int


class SearchStrategy(ABC):
    """Proposes batches of candidates from a fixed space.

    With a `featurize` function (the kind's model features), every proposed candidate
    carries a predicted cost, made before it is measured: the analytical one here,
    the cost model's in the `model` strategy. `tell` feeds measurements back.
    """

    def __init__(
        self, space: list[dict[str, Any]], search: SearchSpec, featurize: Featurize | None = None
    ) -> None:
        self.space = space
        self.search = search
        self.keys = [candidate_key(p) for p in space]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.featurize = featurize
        self._features: dict[int, dict[str, float] | None] = {}  # computed when asked
        self.predictions: dict[str, Prediction] = {}
        self.observed: dict[str, float | None] = {}

    def tell(self, key: str, seconds: float | None) -> None:
        """A measured latency (None: the candidate failed)."""
        if key in self.index:
            self.observed[key] = seconds

    def prediction(self, key: str) -> Prediction | None:
        """The prediction made for `key` before it was measured, if any."""
        if key in self.predictions:
            return self.predictions[key]
        i = self.index.get(key)
        f = self.features(i) if i is not None else None
        pred = f.get(ANALYTICAL) if f else None
        return Prediction(pred, "analytical", 0) if pred and math.isfinite(pred) else None

    def features(self, i: int) -> dict[str, float] | None:
        """The kind's model features of candidate `i` (None without a model)."""
        if i not in self._features:
            self._features[i] = self.featurize(self.space[i]) if self.featurize else None
        return self._features[i]

    @property
    def total(self) -> int:
        """How many trials the job will have when it is done."""
        return min(self.search.budget or len(self.space), len(self.space))

    @abstractmethod
    def propose(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        """Up to `n` (key, params) not in `exclude` (recorded or in flight); [] when done."""


class _OrderedStrategy(SearchStrategy):
    """Walks a fixed order of the space and plans its first `total` candidates."""

    def __init__(
        self, space: list[dict[str, Any]], search: SearchSpec, featurize: Featurize | None = None
    ) -> None:
        super().__init__(space, search, featurize)
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


class ModelStrategy(SearchStrategy):
    """Each batch: the candidates the cost model ranks fastest, plus `explore` at random.

    `cost_model: analytical` ranks by the kind's analytical prediction alone and never
    retrains; `xgboost` fits XGBoost to the knobs alone (random until it has data);
    `combined` fits XGBoost to the knobs, derived quantities and the log of the
    analytical prediction, ranking by the analytical model until the first fit. The
    model is refitted whenever a batch worth of new measurements has arrived.
    """

    MIN_FIT = 4

    def __init__(
        self, space: list[dict[str, Any]], search: SearchSpec, featurize: Featurize | None = None
    ) -> None:
        super().__init__(space, search, featurize)
        if featurize is None and search.cost_model != "xgboost":
            raise ValueError("this job kind has no performance model; use cost_model: xgboost")
        features = [self.features(i) for i in range(len(space))]  # every one is ranked
        if search.cost_model == "xgboost":  # the knobs alone
            knobs = [
                {k: float(v) for k, v in p.items() if isinstance(v, int | float)} for p in space
            ]
            self.x = feature_matrix(knobs, with_analytical=False)
        else:
            self.x = feature_matrix(features, with_analytical=True)
        analytical = [f.get(ANALYTICAL) if f else None for f in features]
        self.analytical = np.array([a if a and math.isfinite(a) else np.inf for a in analytical])
        # Combined: the trees learn the analytical model's error (its log is the base
        # margin) as well as seeing the prediction as a feature.
        self.base: np.ndarray | None = None
        if search.cost_model == "combined":
            logs = np.log(self.analytical)
            finite = logs[np.isfinite(logs)]
            fill = float(finite.max()) + 1.0 if len(finite) else 0.0
            self.base = np.where(np.isfinite(logs), logs, fill)
        self.model = XGBCostModel(seed=search.seed)
        self.fitted_on = 0
        self.rng = np.random.default_rng(search.seed)

    def _scores(self) -> tuple[np.ndarray, str, int] | None:
        """Predicted seconds for every candidate, the model and its version; None: random."""
        measured = [(self.index[k], v) for k, v in self.observed.items()]
        if self.search.cost_model != "analytical" and len(measured) >= self.MIN_FIT:
            if (
                len(measured) - self.fitted_on >= min(self.search.batch_size, 8)
                or not self.fitted_on
            ):
                ok = [v for _, v in measured if v is not None and v > 0]
                worst = math.log(max(ok)) + 1.0 if ok else 0.0
                y = np.array([math.log(v) if v else worst for _, v in measured])
                rows = [i for i, _ in measured]
                base = self.base[rows] if self.base is not None else None
                self.model.fit(self.x[rows], y, base)
                self.fitted_on = len(measured)
            scores = np.exp(self.model.predict(self.x, self.base))
            return scores, f"xgboost-{self.search.cost_model}", self.model.version
        if self.search.cost_model == "xgboost":
            return None
        return self.analytical, "analytical", 0

    def propose(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        planned = sum(1 for k in exclude | set(self.observed) if k in self.index)
        n = min(n, self.total - planned)
        if n <= 0:
            return []
        free = np.array(
            [i for i, k in enumerate(self.keys) if k not in exclude and k not in self.observed]
        )
        if not len(free):
            return []
        scored = self._scores()
        if scored is None:
            chosen = list(self.rng.choice(free, size=min(n, len(free)), replace=False))
            scores = None
        else:
            scores, model, version = scored
            n_explore = min(len(free), round(self.search.explore * n))
            ranked = free[np.argsort(scores[free], kind="stable")]
            chosen = list(ranked[: n - n_explore])
            rest = np.setdiff1d(free, chosen)
            if n_explore and len(rest):
                chosen += list(self.rng.choice(rest, size=min(n_explore, len(rest)), replace=False))
        out = []
        for i in chosen:
            key = self.keys[int(i)]
            if scores is not None and math.isfinite(scores[int(i)]):
                self.predictions[key] = Prediction(float(scores[int(i)]), model, version)
            out.append((key, self.space[int(i)]))
        return out


STRATEGIES: dict[str, type[SearchStrategy]] = {
    "exhaustive": Exhaustive,
    "random": RandomSearch,
    "model": ModelStrategy,
}


def make_strategy(
    space: list[dict[str, Any]], search: SearchSpec, featurize: Featurize | None = None
) -> SearchStrategy:
    return STRATEGIES[search.strategy](space, search, featurize)
