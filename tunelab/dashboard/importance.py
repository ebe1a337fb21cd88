"""Parameter importance by functional ANOVA (fANOVA) over a random forest.

Hutter, Hoos and Leyton-Brown (2014), "An Efficient Approach for Assessing Hyperparameter
Importance": a random forest (scikit-learn) is fitted to the recorded trials (parameters
-> objective). Each tree is a piecewise-constant function over the box of the parameter
space: its leaves tile the box into cells. For one tree, with leaf values v_l and cell
volumes w_l (as fractions of the box):

- the mean is f0 = sum_l w_l v_l and the total variance V = sum_l w_l (v_l - f0)^2;
- the marginal of parameter j at x (the tree's prediction averaged over every other
  parameter) is a_j(x) = sum over the leaves whose cell spans x on j of v_l w_l / f_lj,
  f_lj being the cell's width on j as a fraction of the box's; it is constant between
  consecutive split points on j;
- the variance of that marginal, V_j = integral of (a_j(x) - f0)^2 over j's range, is
  the part of V that j explains alone.

A parameter's importance is V_j / V averaged over the trees, normalised to sum to 1 over
the parameters (as optuna-dashboard shows it). Pure computation: no Streamlit, no database.

Parameters are encoded by their level: a parameter's distinct values are sorted (numbers
numerically, anything else by its text; "absent" first, for trials that lack it) and each
becomes its rank 0..m-1 on the range [-0.5, m - 0.5]. Every level then has the same
weight in the variance, as in a grid search space, whatever its numeric spacing (tile
sizes 16, 32, 64 count as three equal levels, not as 16..64 where 16 would weigh least).
Parameters with a single value cannot explain anything: they are left out and listed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# As optuna's FanovaImportanceEvaluator, so that the two agree on the same data.
N_TREES = 64
MAX_DEPTH = 64


class _Absent:
    """The level of trials that lack a parameter (sorted first)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


@dataclass(frozen=True)
class Encoded:
    """Trials' parameters as a matrix of level ranks, with each column's range."""

    names: list[str]
    x: np.ndarray  # (n_trials, n_params) float
    bounds: np.ndarray  # (n_params, 2): [-0.5, m - 0.5]
    levels: list[list[Any]]  # per column, the values in rank order
    constant: list[str] = field(default_factory=list)  # single-valued, left out


@dataclass(frozen=True)
class Importance:
    """fANOVA importances (summing to 1, largest first) and what they were fitted on."""

    importances: dict[str, float]
    n: int  # trials fitted on
    constant: tuple[str, ...] = ()  # parameters with one value: importance 0, left out
    log: bool = False  # fitted on log(value)
    n_trees: int = N_TREES


def _key(value: Any) -> Any:
    """A hashable, comparable stand-in for a parameter value."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def encode(params: Sequence[dict[str, Any]]) -> Encoded:
    """Level-rank encoding of parameter dicts (see the module docstring)."""
    names = sorted({k for p in params for k in p})
    columns: list[np.ndarray] = []
    kept: list[str] = []
    levels: list[list[Any]] = []
    constant: list[str] = []
    for name in names:
        raw = [_key(p[name]) if name in p else ABSENT for p in params]
        present = {v for v in raw if v is not ABSENT}
        if all(_is_number(v) for v in present):
            ordered: list[Any] = sorted(present)
        else:
            ordered = sorted(present, key=str)
        if any(v is ABSENT for v in raw):
            ordered = [ABSENT, *ordered]
        if len(ordered) < 2:
            constant.append(name)
            continue
        rank = {v: i for i, v in enumerate(ordered)}
        columns.append(np.array([rank[v] for v in raw], dtype=float))
        kept.append(name)
        levels.append(ordered)
    x = np.column_stack(columns) if columns else np.empty((len(params), 0))
    bounds = np.array([[-0.5, len(lv) - 0.5] for lv in levels]).reshape(-1, 2)
    return Encoded(names=kept, x=x, bounds=bounds, levels=levels, constant=constant)


def _leaf_cells(tree: Any, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every leaf's cell (lower and upper corner) and value, for a fitted sklearn tree.
    Level by level from the root: a split on j at t bounds the left child above at t and
    the right child below at t."""
    left, right = tree.children_left, tree.children_right
    n_nodes = left.shape[0]
    lo = np.empty((n_nodes, bounds.shape[0]))
    hi = np.empty_like(lo)
    lo[0], hi[0] = bounds[:, 0], bounds[:, 1]
    frontier = np.array([0])
    while frontier.size:
        inner = frontier[left[frontier] >= 0]
        if not inner.size:
            break
        j, t = tree.feature[inner], tree.threshold[inner]
        kids_l, kids_r = left[inner], right[inner]
        lo[kids_l], hi[kids_l] = lo[inner], hi[inner]
        lo[kids_r], hi[kids_r] = lo[inner], hi[inner]
        hi[kids_l, j] = np.minimum(hi[inner, j], t)
        lo[kids_r, j] = np.maximum(lo[inner, j], t)
        frontier = np.concatenate([kids_l, kids_r])
    leaves = left < 0
    return lo[leaves], hi[leaves], tree.value[leaves, 0, 0]


def tree_variances(tree: Any, bounds: np.ndarray) -> tuple[float, np.ndarray]:
    """One tree's total variance V over the box and each parameter's marginal variance
    V_j (see the module docstring)."""
    lo, hi, v = _leaf_cells(tree, bounds)
    span = bounds[:, 1] - bounds[:, 0]
    frac = (hi - lo) / span  # (leaves, params)
    w = np.prod(frac, axis=1)
    f0 = float(np.dot(w, v))
    total = float(np.dot(w, (v - f0) ** 2))
    per_param = np.zeros(bounds.shape[0])
    for j in range(bounds.shape[0]):
        cuts = np.unique(np.concatenate([bounds[j], tree.threshold[tree.feature == j]]))
        start = np.searchsorted(cuts, lo[:, j])
        end = np.searchsorted(cuts, hi[:, j])
        # The marginal on each interval between cuts: a difference array over the
        # intervals each leaf spans, of the leaf's value times its volume on the others.
        acc = np.zeros(cuts.size)
        contrib = v * w / frac[:, j]
        np.add.at(acc, start, contrib)
        np.add.at(acc, end, -contrib)
        marginal = np.cumsum(acc)[:-1]
        length = np.diff(cuts) / span[j]
        per_param[j] = float(np.dot(length, (marginal - f0) ** 2))
    return total, per_param


def fanova(
    x: np.ndarray,
    y: np.ndarray,
    bounds: np.ndarray,
    *,
    n_trees: int = N_TREES,
    max_depth: int = MAX_DEPTH,
    seed: int = 0,
) -> np.ndarray:
    """Importance of each column of `x` for `y` (summing to 1; all 0 when no tree varies):
    the share of each tree's variance its marginal explains, averaged over the trees of a
    random forest fitted to (x, y), `bounds` being each column's range."""
    from sklearn.ensemble import RandomForestRegressor  # imported on first use: ~1 s

    d = x.shape[1]
    if d == 0 or len(y) < 2:
        return np.zeros(d)
    forest = RandomForestRegressor(
        n_estimators=n_trees,
        max_depth=max_depth,
        min_samples_split=2,
        min_samples_leaf=1,
        random_state=seed,
    ).fit(x, y)
    shares = []
    for est in forest.estimators_:
        total, per_param = tree_variances(est.tree_, bounds)
        if total > 0:
            shares.append(per_param / total)
    if not shares:
        return np.zeros(d)
    mean = np.mean(shares, axis=0)
    s = float(mean.sum())
    return mean / s if s > 0 else mean


def preload() -> None:
    """Import scikit-learn's forest (a few seconds on a cold disk) so that the first
    importance a user asks for does not pay for it; the dashboard calls this once per
    server process, in the background."""
    import sklearn.ensemble  # noqa: F401


def param_importance(
    params: Sequence[dict[str, Any]],
    values: Sequence[float],
    *,
    log: bool = False,
    seed: int = 0,
    n_trees: int = N_TREES,
) -> Importance:
    """fANOVA importance of each parameter for `values` (one per params dict), on
    log(value) when `log` (latencies: their factors, not their milliseconds, add up).
    Non-finite values (and non-positive ones when `log`) are left out."""
    keep = [
        i for i, v in enumerate(values) if v is not None and math.isfinite(v) and (not log or v > 0)
    ]
    ps = [params[i] for i in keep]
    ys = np.array([math.log(values[i]) if log else float(values[i]) for i in keep])
    enc = encode(ps)
    scores = fanova(enc.x, ys, enc.bounds, seed=seed, n_trees=n_trees)
    ranked = sorted(zip(enc.names, scores.tolist(), strict=True), key=lambda kv: -kv[1])
    return Importance(
        importances=dict(ranked),
        n=len(ps),
        constant=tuple(enc.constant),
        log=log,
        n_trees=n_trees,
    )
