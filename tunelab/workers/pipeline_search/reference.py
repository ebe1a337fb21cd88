"""Reference data for a workload and the check of a candidate's output against it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tunelab.platform.kinds import WrongResult
from tunelab.workers.pipeline_search.workloads import arg_shapes, parse_workload, reference

# Largest |out - ref| allowed, relative to max |ref|.
TOLERANCE = {"float32": 1e-5, "float16": 1e-3}


def reference_data(workload: dict[str, Any], cache: dict[str, Any]) -> tuple[list[Any], Any]:
    """Seeded inputs and the exact result for a workload, computed once per worker."""
    key = ("ref", json.dumps(workload, sort_keys=True))
    if key not in cache:
        wl = parse_workload(workload)
        rng = np.random.default_rng(0)
        inputs = [
            rng.uniform(-1, 1, shape).astype(dtype) for _, shape, dtype in arg_shapes(wl)[:-1]
        ]
        cache[key] = (inputs, reference(wl, inputs))
    return cache[key]


def check_output(out: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    """Raise WrongResult unless `out` matches `ref` within the dtype's tolerance."""
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        raise WrongResult("output has the wrong shape or non-finite values")
    scale = float(np.max(np.abs(ref))) or 1.0
    err = float(np.max(np.abs(out.astype(np.float64) - ref))) / scale
    if err > TOLERANCE[dtype]:
        raise WrongResult(f"max error {err:.3g} (relative to max |ref|) > {TOLERANCE[dtype]:g}")
