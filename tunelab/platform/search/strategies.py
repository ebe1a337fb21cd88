"""Search strategies: which candidates to evaluate, through ask/tell.

The driver `ask`s a strategy for up to n candidates not recorded or in flight, and
`tell`s it each result's primary objective value (None: the candidate failed) — as
MetaSchedule's generate_measure_candidates / notify_runner_results. Spaces may be
generated (`Space`): nothing here lists a space larger than `LISTABLE`.

Exhaustive and random plans are pure functions of the space, the search settings and the
trials already recorded, so a resumed job continues exactly where the dead driver
stopped. The model strategy, resumed, refits its model on everything recorded and goes
on from there (its exploration draws restart from the seed).

Strategies are registered by name: the built-ins here, those installed through the
`tunelab.strategies` entry point, and those a kind brings (`JobKind.strategies`). A
strategy with options declares a pydantic `options_model`; a spec gives them in a
section named after the strategy (`search: {strategy: hill, hill: {step: 2}}`).
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel

from tunelab.platform.search.cost_model import ANALYTICAL, relative_to_best
from tunelab.platform.search.space import ListSpace, Space, as_space
from tunelab.schema.models import Direction

if TYPE_CHECKING:
    from tunelab.platform.kinds import JobKind
    from tunelab.platform.search.priors import PriorTrial
    from tunelab.platform.spec import SearchSpec

Featurize = Callable[[dict[str, Any]], "dict[str, float] | None"]


class Prediction(NamedTuple):
    """A predicted cost, which model made it, and that model's version (fits so far;
    0 for models that are not fitted). Trials record these as predicted_cost, model and
    model_version."""

    seconds: float
    model: str
    version: int


class StrategyContext(Protocol):
    """What the driver offers a strategy beyond its space (None in replay): job-level
    steps for learning curves, job checkpoints of its own state, and the job's artifacts
    (`JOB:NAME` with `job_id` names one unambiguously)."""

    job_id: int

    def report(self, step: int, metrics: dict[str, Any], series: str = "") -> None:
        """A step of the job's curve, or of a named `series` of it (an evaluation's
        curve, stored like a trial's steps under that key)."""

    def save_checkpoint(self, step: int, data: bytes) -> None: ...

    def load_checkpoint(self) -> tuple[int, bytes] | None: ...

    def save_artifact(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> str: ...

    def load_artifact(self, ref: str) -> bytes: ...


class SearchStrategy(ABC):
    """Proposes candidates of a space and learns from their results.

    With a `featurize` function (the kind's model features), every proposed candidate
    can carry a predicted cost, made before it is measured: the analytical one here,
    the cost model's in the `model` strategy.
    """

    name: ClassVar[str]
    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(
        self,
        space: Space | list[dict[str, Any]],
        search: SearchSpec,
        featurize: Featurize | None = None,
        *,
        direction: Direction | str = Direction.minimize,
        context: StrategyContext | None = None,
        priors: Sequence[PriorTrial] = (),
    ) -> None:
        self.space = as_space(space)
        self.search = search
        self.featurize = featurize
        self.direction = Direction(direction)
        self.context = context
        self.priors = list(priors)
        self.options = search.options_for(self.name, self.options_model)
        self._index: dict[str, int] | None = None
        self._features: dict[int, dict[str, float] | None] = {}  # computed when asked
        self.predictions: dict[str, Prediction] = {}
        self.observed: dict[str, float | None] = {}

    # -- what the driver calls ------------------------------------------------------

    @classmethod
    def wants_priors(cls, search: SearchSpec) -> bool:
        """Whether this search learns from other workloads' trials (`priors`): only then
        does the driver read them and pass them to the constructor."""
        return False

    @property
    def total(self) -> int:
        """How many trials the job will have when it is done."""
        return min(self.search.budget or len(self.space), len(self.space))

    @abstractmethod
    def ask(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        """Up to `n` (key, params) not in `exclude` (recorded or in flight); [] when done."""

    def tell(self, key: str, value: float | None, params: dict[str, Any] | None = None) -> None:
        """A result's primary objective value (None: the candidate failed). `params` is
        given for results recorded before this strategy existed (a resumed job)."""
        self.observed[key] = value

    def resumed(self, key: str, params: dict[str, Any]) -> None:
        """A trial an earlier run left `running` (its driver was lost), which this run
        evaluates again under the same key before asking anything: in flight, its result
        comes through `tell_result`. The default does nothing."""
        return

    def tell_result(
        self,
        key: str,
        value: float | None,
        params: dict[str, Any] | None = None,
        *,
        info: dict[str, Any] | None = None,
        payload: Any = None,
    ) -> None:
        """A fresh result with what the evaluation recorded (`info`) and its unrecorded
        `payload` (Measurement.payload). Strategies that learn from more than the
        objective value override this; the default is `tell`."""
        self.tell(key, value, params)

    def waiting(self) -> bool:
        """True when `ask` gave nothing now but results still in flight will let it
        propose more (a learner waiting for its batch): the driver asks again later."""
        return False

    def prediction(self, key: str) -> Prediction | None:
        """The prediction made for `key` before it was measured, if any."""
        if key in self.predictions:
            return self.predictions[key]
        i = self.index_of(key)
        f = self.features(i) if i is not None else None
        pred = f.get(ANALYTICAL) if f else None
        return Prediction(pred, "analytical", 0) if pred and math.isfinite(pred) else None

    # -- helpers --------------------------------------------------------------------

    def index_of(self, key: str) -> int | None:
        """The index of `key` in a listable space (None if not there, or not listable)."""
        if self._index is None:
            if not self.space.listable():
                return None
            self._index = {self.space.key(i): i for i in range(len(self.space))}
        return self._index.get(key)

    def features(self, i: int) -> dict[str, float] | None:
        """The kind's model features of candidate `i` (None without a model)."""
        if i not in self._features:
            self._features[i] = self.featurize(self.space.params(i)) if self.featurize else None
        return self._features[i]


class _OrderedStrategy(SearchStrategy):
    """Walks a fixed order of the space and plans its first `total` candidates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plan = self.order()
        self._planned = 0

    @abstractmethod
    def order(self) -> Iterator[int]: ...

    def ask(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        while self._planned < self.total and len(out) < n:
            idx = next(self._plan)
            self._planned += 1
            key = self.space.key(idx)
            if key not in exclude:
                out.append((key, self.space.params(idx)))
        return out


class Exhaustive(_OrderedStrategy):
    """Every candidate in the kind's order (up to the budget)."""

    name = "exhaustive"

    def order(self) -> Iterator[int]:
        return iter(range(len(self.space)))


class RandomSearch(_OrderedStrategy):
    """A seeded random order: the same seed gives the same trials. A listable space is
    permuted; a larger one is sampled without repeats."""

    name = "random"

    def order(self) -> Iterator[int]:
        rng = np.random.default_rng(self.search.seed)
        if self.space.listable():
            return (int(i) for i in rng.permutation(len(self.space)))
        return _distinct_draws(rng, len(self.space))


def _distinct_draws(rng: np.random.Generator, size: int) -> Iterator[int]:
    """Uniform draws from range(size) without repeats, for a size too large to permute."""
    seen: set[int] = set()
    while len(seen) < size:
        i = int(rng.integers(size))
        if i not in seen:
            seen.add(i)
            yield i


class ModelStrategy(SearchStrategy):
    """Each batch: the candidates the cost model ranks best, half of them among the
    neighbours of the best measured so far, plus `explore` at random after a batch that
    found nothing better.

    `cost_model: analytical` ranks by the kind's analytical prediction alone and never
    retrains; `xgboost` fits XGBoost to the knobs alone (random until it has data);
    `combined` fits XGBoost to the knobs, derived quantities and the log of the
    analytical prediction, ranking by the analytical model until the first fit. The
    model is refitted whenever a batch worth of new measurements has arrived. Once a
    learned model has a best candidate, `EXPLOIT` of each batch are the best-ranked
    candidates that differ from it in one parameter (good ones cluster).

    Warm start (`warm_start: true`; off by default: on the held-out sweeps it did worse
    than a cold start, bench/results/search_efficiency.txt): given other
    workloads' trials (`priors`), the model learns costs relative to each workload's best
    (log seconds minus the group's best log seconds; the analytical prediction likewise
    relative to the group's best prediction), so what it learnt transfers. It ranks the
    first batch before anything of this job is measured (xgboost; combined takes its first
    batch from the analytical model, which knows this workload where the priors know only
    others) and refits as this job's trials arrive, each weighted `OWN_WEIGHT` times a
    prior trial: the priors shape the ranking where this job has measured nothing.

    The model ranks a pool: the whole space when it is listable, else a seeded random
    sample of `POOL` candidates (plus those recorded before a resume), grown by another
    sample when the budget outruns it. The objective must be a positive cost to minimise.
    """

    name = "model"
    MIN_FIT = 4
    POOL = 8192
    ROUNDS = 30  # trees per fit
    OWN_WEIGHT = 100.0
    EXPLOIT = 0.5

    @classmethod
    def wants_priors(cls, search: SearchSpec) -> bool:
        return search.cost_model != "analytical" and search.warm_start is True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        search = self.search
        if self.direction != Direction.minimize:
            raise ValueError("the model strategy ranks costs to minimise; this job maximises")
        if self.featurize is None and search.cost_model != "xgboost":
            raise ValueError("this job kind has no performance model; use cost_model: xgboost")
        from tunelab.platform.search.cost_model import XGBCostModel

        self.warm = bool(self.priors) and self.wants_priors(search)
        self.full = self.space.listable()
        self._sampler = None if self.full else _distinct_draws(
            np.random.default_rng([search.seed, 1]), len(self.space)
        )  # fmt: skip
        self.pool: list[dict[str, Any]] = []
        self.pool_space = self.space if self.full else ListSpace(self.pool)
        self._grow([] if self.full else self._sample(self.POOL))
        self.model = XGBCostModel(seed=search.seed, rounds=self.ROUNDS)
        self.fitted_on = -1
        self.rng = np.random.default_rng(search.seed)
        self._incumbent: float | None = None  # the best value when last asked

    def _sample(self, n: int) -> list[dict[str, Any]]:
        assert self._sampler is not None
        out = []
        for i in self._sampler:
            out.append(self.space.params(i))
            if len(out) >= n:
                break
        return out

    def _rows(
        self, features: list[dict[str, float] | None], params: list[dict[str, Any]]
    ) -> list[dict[str, float] | None]:
        """What the model sees of each candidate: the knobs alone (xgboost), or the
        kind's features with its analytical prediction."""
        if self.search.cost_model == "xgboost":
            return [{k: float(v) for k, v in p.items() if isinstance(v, int | float)}
                    for p in params]  # fmt: skip
        return features

    def _grow(self, new: list[dict[str, Any]]) -> None:
        """Add candidates to a sampled pool and (re)compute the pool's features (a
        listable space is its own pool)."""
        from tunelab.platform.search.cost_model import feature_matrix, feature_names

        if not self.full:
            self.pool.extend(new)
            self.pool_space = ListSpace(self.pool)
            self._index = {self.pool_space.key(i): i for i in range(len(self.pool))}
            self._features = {}
        space = self.pool_space
        self.keys = [space.key(i) for i in range(len(space))]
        features = [self.pool_features(i) for i in range(len(space))]  # every one is ranked
        rows = self._rows(features, [space.params(i) for i in range(len(space))])
        analytical = [f.get(ANALYTICAL) if f else None for f in features]
        self.analytical = np.array([a if a and math.isfinite(a) else np.inf for a in analytical])
        with_analytical = self.search.cost_model != "xgboost"
        self.base: np.ndarray | None = None
        if not self.warm:
            self.x = feature_matrix(rows, with_analytical=with_analytical)
            # Combined: the trees learn the analytical model's error (its log is the base
            # margin) as well as seeing the prediction as a feature.
            if self.search.cost_model == "combined":
                self.base = _fill(np.log(self.analytical))
            return
        # Warm: the priors' columns are the pool's; the analytical prediction is taken
        # relative to its group's best prediction (the pool is this job's group).
        names = feature_names(rows)
        prior_rows = self._rows([t.features for t in self.priors], [t.params for t in self.priors])
        groups = [t.group for t in self.priors]
        self.x = feature_matrix(rows, with_analytical, names, relative=[""] * len(rows))
        self.prior_x = feature_matrix(prior_rows, with_analytical, names, relative=groups)
        self.prior_y = relative_to_best(np.log([t.value for t in self.priors]), groups)
        self.prior_base: np.ndarray | None = None
        if self.search.cost_model == "combined":
            self.base, self.prior_base = _fill(self.x[:, -1]), _fill(self.prior_x[:, -1])

    def pool_features(self, i: int) -> dict[str, float] | None:
        if i not in self._features:
            params = self.pool_space.params(i)
            self._features[i] = self.featurize(params) if self.featurize else None
        return self._features[i]

    def features(self, i: int) -> dict[str, float] | None:
        return self.pool_features(i)

    def index_of(self, key: str) -> int | None:
        if self.full:
            return super().index_of(key)
        return self._index.get(key) if self._index else None

    def tell(self, key: str, value: float | None, params: dict[str, Any] | None = None) -> None:
        if self.index_of(key) is None:
            if self.full or params is None:
                return  # not a candidate of this space
            self._grow([params])
        self.observed[key] = value

    def _targets(self, measured: list[tuple[int | None, float | None]]) -> np.ndarray:
        """Log seconds of this job's trials (failed ones: slower than anything measured);
        warm, relative to the best measured so far."""
        ok = [v for _, v in measured if v is not None and v > 0]
        worst = math.log(max(ok)) + 1.0 if ok else 0.0
        y = np.array([math.log(v) if v else worst for _, v in measured])
        return y - math.log(min(ok)) if self.warm and ok else y

    def _due(self, measured: int) -> bool:
        """Whether to refit: never fitted, or a batch worth of new measurements."""
        return self.fitted_on < 0 or measured - self.fitted_on >= min(self.search.batch_size, 8)

    def _scores(self) -> tuple[np.ndarray, str, int] | None:
        """Predicted seconds for every pooled candidate, the model and its version;
        None: random."""
        measured = [(self.index_of(k), v) for k, v in self.observed.items()]
        rows = [i for i, _ in measured]
        cost_model = self.search.cost_model
        if self.warm:
            if self._due(len(measured)):
                own = np.full(len(rows), self.OWN_WEIGHT)
                base = None
                if self.base is not None and self.prior_base is not None:
                    base = np.concatenate([self.prior_base, self.base[rows]])
                self.model.fit(
                    np.vstack([self.prior_x, self.x[rows]]),
                    np.concatenate([self.prior_y, self._targets(measured)]),
                    base, weight=np.concatenate([np.ones(len(self.prior_y)), own]),
                )  # fmt: skip
                self.fitted_on = len(measured)
            # Relative log seconds, anchored at this job's best (before any, the best
            # analytical prediction) so that they read as seconds.
            relative = self.model.predict(self.x, self.base)
            ok = [v for _, v in measured if v is not None and v > 0]
            finite = self.analytical[np.isfinite(self.analytical)]
            anchor = math.log(min(ok)) if ok else math.log(finite.min()) if len(finite) else 0.0
            return np.exp(relative + anchor), f"xgboost-{cost_model}-warm", self.model.version
        if cost_model != "analytical" and len(measured) >= self.MIN_FIT:
            if self._due(len(measured)):
                base = self.base[rows] if self.base is not None else None
                self.model.fit(self.x[rows], self._targets(measured), base)
                self.fitted_on = len(measured)
            scores = np.exp(self.model.predict(self.x, self.base))
            return scores, f"xgboost-{cost_model}", self.model.version
        if cost_model == "xgboost":
            return None
        return self.analytical, "analytical", 0

    def _free(self, exclude: set[str]) -> np.ndarray:
        return np.array(
            [i for i, k in enumerate(self.keys) if k not in exclude and k not in self.observed]
        )

    def _best(self) -> int | None:
        """The pool index of the best candidate measured so far."""
        ok = [(v, k) for k, v in self.observed.items() if v is not None and v > 0]
        return self.index_of(min(ok)[1]) if ok else None

    def _neighbours(self, best: int, ranked: np.ndarray) -> list[int]:
        """The `ranked` candidates that differ from candidate `best` in one parameter."""
        mine = self.pool_space.params(best)
        out = []
        for i in ranked:
            p = self.pool_space.params(int(i))
            if sum(p.get(k) != v for k, v in mine.items()) == 1:
                out.append(int(i))
        return out

    def _choose(self, free: np.ndarray, scores: np.ndarray, n: int) -> list[int]:
        """The batch: exploitation, the model's ranking, then exploration."""
        ranked = free[np.argsort(scores[free], kind="stable")]
        if self.warm and not self.observed and self.search.cost_model == "combined":
            # Nothing of this job measured: the analytical model knows this workload, the
            # priors only others (their ranking first lost trials on the tuning sweeps).
            ranked = free[np.argsort(self.analytical[free], kind="stable")]
        incumbent = min((v for v in self.observed.values() if v), default=None)
        # Explore only after a batch that found nothing better: while the model keeps
        # improving on the best, following it is what finds the best soonest.
        stalled = bool(self.observed) and incumbent == self._incumbent
        self._incumbent = incumbent
        n_explore = min(len(free), round(self.search.explore * n)) if stalled else 0
        chosen: list[int] = []
        best = self._best()
        if self.search.cost_model != "analytical" and best is not None:
            chosen = self._neighbours(best, ranked)[: round(self.EXPLOIT * (n - n_explore))]
        taken = set(chosen)
        chosen += [int(i) for i in ranked if int(i) not in taken][: n - n_explore - len(chosen)]
        rest = np.setdiff1d(free, chosen)
        if n_explore and len(rest):
            chosen += [int(i) for i in self.rng.choice(rest, size=min(n_explore, len(rest)),
                                                       replace=False)]  # fmt: skip
        return chosen

    def ask(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        planned = sum(1 for k in exclude | set(self.observed) if self.index_of(k) is not None)
        n = min(n, self.total - planned)
        if n <= 0:
            return []
        free = self._free(exclude)
        if not self.full and len(free) < 4 * n and len(self.pool) < len(self.space):
            self._grow(self._sample(self.POOL))
            free = self._free(exclude)
        if not len(free):
            return []
        scored = self._scores()
        if scored is None:
            chosen = list(self.rng.choice(free, size=min(n, len(free)), replace=False))
            scores = None
        else:
            scores, model, version = scored
            chosen = self._choose(free, scores, n)
        out = []
        for i in chosen:
            key = self.keys[int(i)]
            if scores is not None and math.isfinite(scores[int(i)]):
                self.predictions[key] = Prediction(float(scores[int(i)]), model, version)
            out.append((key, self.pool_space.params(int(i))))
        return out


def _fill(logs: np.ndarray) -> np.ndarray:
    """Log predictions with the missing ones (no prediction) worse than any given."""
    finite = logs[np.isfinite(logs)]
    fill = float(finite.max()) + 1.0 if len(finite) else 0.0
    return np.where(np.isfinite(logs), logs, fill)


BUILTIN: dict[str, type[SearchStrategy]] = {
    s.name: s for s in (Exhaustive, RandomSearch, ModelStrategy)
}


@functools.cache
def _entry_point_strategies() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="tunelab.strategies")}


def available_strategies(kind: JobKind | None = None) -> set[str]:
    """Names a spec may give as `search.strategy` (for `kind`, its own ones too)."""
    own = set(kind.strategies()) if kind is not None else set()
    return set(BUILTIN) | set(_entry_point_strategies()) | own


def get_strategy(name: str, kind: JobKind | None = None) -> type[SearchStrategy]:
    """The strategy class called `name`: the kind's own first, then the built-ins, then
    installed ones. KeyError if none is known."""
    if kind is not None and name in kind.strategies():
        return kind.strategies()[name]
    if name in BUILTIN:
        return BUILTIN[name]
    eps = _entry_point_strategies()
    if name not in eps:
        raise KeyError(f"unknown search strategy {name!r}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, SearchStrategy)):
        raise TypeError(f"entry point {name!r} is not a SearchStrategy subclass")
    return cls


def make_strategy(
    space: Space | list[dict[str, Any]],
    search: SearchSpec,
    featurize: Featurize | None = None,
    *,
    kind: JobKind | None = None,
    direction: Direction | str = Direction.minimize,
    context: StrategyContext | None = None,
    priors: Callable[[], Sequence[PriorTrial]] | None = None,
) -> SearchStrategy:
    """The strategy a job's search section asks for, over `space`. `priors` is called
    (once) only for a strategy that wants other workloads' trials for this search."""
    cls = get_strategy(search.strategy, kind)
    if priors is not None and cls.wants_priors(search):
        return cls(space, search, featurize, direction=direction, context=context,
                   priors=priors())  # fmt: skip
    return cls(space, search, featurize, direction=direction, context=context)
