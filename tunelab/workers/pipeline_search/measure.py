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


def baseline_threads(spec: JobSpec, params: dict[str, Any]) -> int:
    """The threads a library baseline uses: its own (`numpy@1t`), else the candidates'
    (the spec's, else the worker's, else every core)."""
    if params.get("threads"):
        return int(params["threads"])
    n = spec.measure.threads or os.environ.get("TVM_NUM_THREADS")
    return int(n) if n else os.cpu_count() or 1


def measure_numpy(spec: JobSpec, params: dict[str, Any], cache: dict[str, Any]) -> Measurement:
    """The CPU library baseline: NumPy's matmul (its BLAS), same inputs, same repeats,
    timed in a process of its own at `baseline_threads` (`library.py`: not beside this
    worker's TVM thread pool)."""
    from tunelab.workers.pipeline_search.library import library_process

    m = spec.measure
    threads = baseline_threads(spec, params)
    answer = library_process(cache, threads).call({
        "workload": spec.workload, "check": m.check, "warmup": m.warmup,
        "repeats": m.repeats, "number": m.number, "min_repeat_ms": m.min_repeat_ms,
    })  # fmt: skip
    extra = {"library": answer["library"], "threads": threads, "process": "own",
             "waited_s": round(answer["waited_s"], 4)}  # fmt: skip
    return Measurement(answer["latencies_s"], extra)
