"""CPU measurement: a built llvm candidate (TVM runtime) or NumPy's BLAS baseline.

Checks the output against the reference before timing; GPU measurement is in `gpu`.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from tunelab.platform.kinds import Built, Measurement, RunError
from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.reference import check_output, reference_data
from tunelab.workers.pipeline_search.workloads import arg_shapes, parse_workload


def load_llvm_module(artifact: bytes) -> Any:
    """Load an exported TVM shared library from its bytes."""
    import tvm

    fd, path = tempfile.mkstemp(prefix="tunelab-kernel-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(artifact)
        return tvm.runtime.load_module(path)
    finally:
        os.unlink(path)  # the loader keeps its own mapping


def time_module(mod: Any, args: list[Any], spec: JobSpec, func: str = "main") -> list[float]:
    """Seconds per run for each of `repeats` repeats, after `warmup` untimed runs."""
    import tvm

    m = spec.measure
    for _ in range(m.warmup):
        mod[func](*args)
    evaluator = mod.time_evaluator(
        func, tvm.cpu(), number=m.number, repeat=m.repeats, min_repeat_ms=round(m.min_repeat_ms)
    )
    return [float(x) for x in evaluator(*args).results]


def measure_llvm(spec: JobSpec, built: Built, cache: dict[str, Any]) -> Measurement:
    """Load, run once, check, then time a candidate built for the CPU."""
    import tvm

    wl = parse_workload(spec.workload)
    inputs, ref = reference_data(spec.workload, cache)
    _, out_shape, out_dtype = arg_shapes(wl)[-1]
    dev = tvm.cpu()
    try:
        mod = load_llvm_module(built.artifact)
        args = [tvm.runtime.tensor(x, dev) for x in inputs]
        args.append(tvm.runtime.tensor(np.full(out_shape, np.nan, out_dtype), dev))
        t0 = time.perf_counter()
        mod["main"](*args)
        first_run_s = time.perf_counter() - t0
    except Exception as exc:
        raise RunError(f"{type(exc).__name__}: {exc}") from None
    if spec.measure.check:
        check_output(args[-1].numpy(), ref, wl.dtype)
    latencies = time_module(mod, args, spec)
    return Measurement(latencies, {"first_run_s": first_run_s})


def measure_numpy(spec: JobSpec, cache: dict[str, Any]) -> Measurement:
    """The CPU library baseline: NumPy's matmul (its BLAS), same inputs, same repeats."""
    wl = parse_workload(spec.workload)
    inputs, ref = reference_data(spec.workload, cache)
    a, b = (x.astype(wl.acc_dtype) for x in inputs)  # BLAS has no fp16 GEMM on the CPU
    out = np.matmul(a, b)
    if spec.measure.check:
        check_output(out, ref, wl.dtype)
    m = spec.measure
    for _ in range(m.warmup):
        np.matmul(a, b, out=out)
    latencies = []
    for _ in range(m.repeats):
        runs, t0 = 0, time.perf_counter()
        while True:
            for _ in range(m.number):
                np.matmul(a, b, out=out)
            runs += m.number
            elapsed = time.perf_counter() - t0
            if elapsed * 1000 >= m.min_repeat_ms:
                break
        latencies.append(elapsed / runs)
    return Measurement(latencies, {"library": "numpy " + np.__version__})
