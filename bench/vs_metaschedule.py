"""The same GEMM tuned by TVM MetaSchedule and by tunelab's `model` strategy, same budget.

Both run on this machine's CPU (llvm, the host's mcpu) with the same trial budget.
Printed side by side: wall time of the tuning (tunelab's includes its local Ray workers'
start but not Ray's own start-up, shown apart), seconds per trial, and the best kernel of
each, rebuilt and re-measured by one harness (same inputs, warm-up, repeats and
min_repeat_ms) after both have finished, so the comparison does not depend on either
tool's own timer. Each best kernel is checked against NumPy first.

    python bench/vs_metaschedule.py [--m 512 --n 512 --k 512] [--trials 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import emit

from tunelab.platform import api
from tunelab.platform.execution import connect_ray
from tunelab.platform.kinds import get_kind
from tunelab.platform.spec import parse_spec
from tunelab.workers.pipeline_search.build_llvm import llvm_host_cpu
from tunelab.workers.pipeline_search.measure import load_llvm_module
from tunelab.workers.pipeline_search.workloads import parse_workload, tensor_program

REPEATS, MIN_REPEAT_MS = 10, 50


def harness(run, args) -> float:
    """Median seconds per run of a compiled `main`, the same way for both tools."""
    import tvm

    run(*args)
    timer = run.time_evaluator("main", tvm.cpu(), number=1, repeat=REPEATS,
                               min_repeat_ms=MIN_REPEAT_MS)  # fmt: skip
    return float(np.median(timer(*args).results))


def main() -> None:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, default=512)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    workload = {"op": "gemm", "M": args.m, "N": args.n, "K": args.k, "dtype": "float32"}
    wl = parse_workload(workload)
    cpu = llvm_host_cpu()
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (args.m, args.k)).astype("float32")
    b = rng.uniform(-1, 1, (args.k, args.n)).astype("float32")
    ref = a.astype(np.float64) @ b.astype(np.float64)

    def tensors():
        return [tvm.runtime.tensor(a), tvm.runtime.tensor(b),
                tvm.runtime.tensor(np.zeros((args.m, args.n), "float32"))]  # fmt: skip

    def check(out) -> None:
        err = np.abs(out.numpy() - ref).max() / np.abs(ref).max()
        assert err < 1e-5, f"best kernel is wrong (max error {err:.2g})"

    lines = [f"# {wl.describe()} on {cpu} ({cores} cores), {args.trials} trials each"]

    # -- MetaSchedule ---------------------------------------------------------------------
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": cores})
    mod = tvm.IRModule({"main": tensor_program(wl)})
    with tempfile.TemporaryDirectory() as work_dir:
        t0 = time.perf_counter()
        db = ms.tune_tir(mod, target, work_dir, max_trials_global=args.trials,
                         num_trials_per_iter=min(16, args.trials), seed=0)  # fmt: skip
        ms_wall = time.perf_counter() - t0
        n_ms = len(db.get_all_tuning_records())
        sch = ms.tir_integration.compile_tir(db, mod, target)
    ms_mod = tvm.compile(sch.mod, target=target)
    ms_args = tensors()
    ms_mod["main"](*ms_args)
    check(ms_args[2])
    ms_best = harness(ms_mod.mod, ms_args)

    # -- tunelab ----------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        t0 = time.perf_counter()
        connect_ray(None)
        ray_start = time.perf_counter() - t0
        spec = {"name": "vs-metaschedule", "kind": "pipeline-search", "workload": workload,
                "target": {"kind": "llvm", "mcpu": cpu},
                "search": {"strategy": "model", "budget": args.trials, "batch_size": 8},
                "measure": {"repeats": 5, "min_repeat_ms": 20}}  # fmt: skip
        t0 = time.perf_counter()
        job_id = api.submit(spec, db=db_url)
        tl_wall = time.perf_counter() - t0
        searched = [t for t in api.trials(job_id, db=db_url) if "baseline" not in t.params]
        best = api.trials(job_id, db=db_url, top=1)[0].params
    kind = get_kind("pipeline-search")
    built = kind.build(parse_spec(spec), best)
    tl_mod = load_llvm_module(built.artifact)
    tl_args = tensors()
    tl_mod["main"](*tl_args)
    check(tl_args[2])
    tl_best = harness(tl_mod, tl_args)

    ms_per, tl_per = ms_wall / max(n_ms, 1), tl_wall / max(len(searched), 1)
    lines += [
        f"{'system':<14} {'trials':>6} {'wall s':>8} {'s/trial':>8} {'best (re-measured)':>19}",
        f"{'MetaSchedule':<14} {n_ms:>6} {ms_wall:>8.1f} {ms_wall / max(n_ms, 1):>8.2f} "
        f"{ms_best * 1e3:>16.3f} ms",
        f"{'tunelab model':<14} {len(searched):>6} {tl_wall:>8.1f} "
        f"{tl_wall / max(len(searched), 1):>8.2f} {tl_best * 1e3:>16.3f} ms",
        f"tunelab best params: {best}",
        f"(Ray start-up before tunelab's job, not counted: {ray_start:.1f} s)",
        f"kernel: tunelab is {ms_best / tl_best:.2f}x MetaSchedule's speed "
        f"(>1 = faster); time per trial: {ms_per / tl_per:.2f}x "
        "less with tunelab",
    ]  # fmt: skip
    emit(lines, args.out)


if __name__ == "__main__":
    main()
