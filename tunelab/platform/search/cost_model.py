"""The learned cost model: XGBoost over a candidate's features, predicting log latency.

A kind describes each candidate with numbers (`JobKind.model_features`); among them may
be its own analytical prediction (`predicted_s`), which the combined model takes as one
more feature (its logarithm). Failed candidates are taught as slower than anything
measured, so the ranking learns to avoid them too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ANALYTICAL = "predicted_s"


def feature_names(rows: Sequence[dict[str, float] | None]) -> list[str]:
    """The feature columns of `rows` (besides the analytical prediction), sorted."""
    return sorted({k for r in rows if r for k in r if k != ANALYTICAL})


def feature_matrix(
    rows: Sequence[dict[str, float] | None],
    with_analytical: bool,
    names: Sequence[str] | None = None,
    *,
    relative: Sequence[str] | None = None,
) -> np.ndarray:
    """One row per candidate, columns in sorted feature-name order (or `names`; NaN
    where absent), then the log analytical prediction. With `relative` (each row's
    group), that log is taken relative to its group's best prediction, which transfers
    from one workload to another where absolute seconds do not."""
    names = feature_names(rows) if names is None else list(names)
    cols = len(names) + (1 if with_analytical else 0)
    out = np.full((len(rows), cols), np.nan)
    for i, r in enumerate(rows):
        if not r:
            continue
        for j, name in enumerate(names):
            value = r.get(name)
            if value is not None and math.isfinite(value):
                out[i, j] = value
        if with_analytical:
            pred = r.get(ANALYTICAL)
            out[i, -1] = math.log(pred) if pred and math.isfinite(pred) and pred > 0 else np.nan
    if with_analytical and relative is not None:
        out[:, -1] = relative_to_best(out[:, -1], relative)
    return out


def relative_to_best(values: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Each value minus the smallest finite value of its group (NaN stays NaN)."""
    values = np.asarray(values, dtype=float)
    keys = np.asarray(groups, dtype=object)
    out = values.copy()
    for group in dict.fromkeys(groups):
        mask = keys == group
        finite = values[mask][np.isfinite(values[mask])]
        if len(finite):
            out[mask] = values[mask] - finite.min()
    return out


class XGBCostModel:
    """Gradient-boosted trees fitted to log seconds; deterministic for a given seed."""

    def __init__(self, seed: int = 0, rounds: int = 120) -> None:
        self.seed = seed
        self.rounds = rounds
        self.booster = None
        self.version = 0

    def fit(
        self,
        x: np.ndarray,
        log_seconds: np.ndarray,
        base: np.ndarray | None = None,
        weight: np.ndarray | None = None,
    ) -> None:
        """Fit log seconds; with `base` (log of a prior prediction per row) the trees
        learn only the correction to it, which needs far fewer measurements. `weight`:
        each row's weight (a job's own trials above other workloads')."""
        import xgboost as xgb

        params = {
            "objective": "reg:squarederror",
            "max_depth": 5,
            "eta": 0.15,
            "subsample": 0.9,
            "min_child_weight": 1,
            "seed": self.seed,
            "nthread": 1,  # reproducible, and the driver shares its node
            "verbosity": 0,
        }
        dtrain = xgb.DMatrix(x, label=log_seconds, missing=np.nan, base_margin=base, weight=weight)
        self.booster = xgb.train(params, dtrain, num_boost_round=self.rounds)
        self.version += 1

    def predict(self, x: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """Predicted log seconds (`base` as given to `fit`)."""
        import xgboost as xgb

        assert self.booster is not None, "fit first"
        return self.booster.predict(xgb.DMatrix(x, missing=np.nan, base_margin=base))
