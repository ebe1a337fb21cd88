"""tunelab's `model` search against TVM MetaSchedule: same programs, budget and threads.

For each workload (3 GEMMs and 2 conv2d by default) and each seed, both systems tune the
same TIR program (tunelab's `tensor_program`, conv2d as implicit GEMM) on this CPU with
the same trial budget and the same thread count (TVM_NUM_THREADS for both runtimes,
`num-cores` in MetaSchedule's target, `measure.threads` in tunelab's spec), printed in the
header. MetaSchedule gets a builder timeout its start-up cannot exhaust (a fresh builder
process spends ~16 s importing its tensor intrinsics; its default 30 s timeout fails
builds under load) and its failed builds and runs are counted and printed, not hidden.
Then each best kernel is checked against a float64 reference and the two are re-timed
by one harness, interleaved (MetaSchedule, tunelab, MetaSchedule, ...) over several rounds:
the ratio is taken per round and its median and range are reported. The summary is the
geometric mean over workloads of the per-workload median ratio (over seeds), with the
geometric means of the per-workload minimum and maximum as its spread.

    python bench/vs_metaschedule.py [--trials 32] [--seeds 3] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import emit

WORKLOADS: dict[str, dict[str, Any]] = {
    "gemm512": {"op": "gemm", "M": 512, "N": 512, "K": 512, "dtype": "float32"},
    "gemm1024": {"op": "gemm", "M": 1024, "N": 1024, "K": 1024, "dtype": "float32"},
    "gemm384x320x256": {"op": "gemm", "M": 384, "N": 320, "K": 256, "dtype": "float32"},
    "conv14x14x64": {"op": "conv2d", "batch": 1, "H": 14, "W": 14, "C": 64, "K": 64,
                     "R": 3, "S": 3, "stride": 1, "pad": 1},
    "conv28x28x128": {"op": "conv2d", "batch": 1, "H": 28, "W": 28, "C": 128, "K": 128,
                      "R": 3, "S": 3, "stride": 1, "pad": 1},
}  # fmt: skip
MS_BUILD_TIMEOUT_S = 300  # far above its ~16 s import under load
MS_RUN_TIMEOUT_S = 60
ROUND_MS = 100  # each timed round runs the kernel for at least this long


def tune_metaschedule(mod: Any, target: Any, trials: int, seed: int) -> tuple[Any, dict]:
    """Tune `mod` with MetaSchedule; returns the compiled best and what happened."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    failures = {"build": 0, "run": 0, "measured": 0}

    @derived_object
    class CountFailures(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, candidates, builds, runs) -> None:
            for b, r in zip(builds, runs, strict=True):
                failures["measured"] += 1
                if b.error_msg is not None:
                    failures["build"] += 1
                elif r.error_msg is not None:
                    failures["run"] += 1

    with tempfile.TemporaryDirectory() as work_dir:
        t0 = time.perf_counter()
        db = ms.tune_tir(
            mod, target, work_dir, max_trials_global=trials,
            num_trials_per_iter=min(16, trials), seed=seed,
            builder=ms.builder.LocalBuilder(timeout_sec=MS_BUILD_TIMEOUT_S),
            runner=ms.runner.LocalRunner(timeout_sec=MS_RUN_TIMEOUT_S),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                               CountFailures()],
        )  # fmt: skip
        wall = time.perf_counter() - t0
        sch = ms.tir_integration.compile_tir(db, mod, target)
    return sch, {"wall_s": wall, **failures}


def tune_tunelab(workload: dict, trials: int, seed: int, threads: int, mcpu: str) -> tuple:
    """Run tunelab's `model` search as a user would (api.submit, local Ray, SQLite)."""
    from tunelab.platform import api
    from tunelab.platform.best import best_trial

    spec = {
        "name": "vs-metaschedule", "kind": "pipeline-search", "workload": workload,
        "target": {"kind": "llvm", "mcpu": mcpu},
        "search": {"strategy": "model", "budget": trials, "batch_size": 8, "seed": seed},
        "measure": {"repeats": 5, "min_repeat_ms": 20, "threads": threads},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        t0 = time.perf_counter()
        job_id = api.submit(spec, db=db)
        wall = time.perf_counter() - t0
        rows = api.trials(job_id, db=db)
        searched = [t for t in rows if "baseline" not in t.params]
        failed = sum(1 for t in searched if t.status != "ok")
        best = best_trial(job_id, db=db).trial.params  # the noise-aware winner
    return spec, best, {"wall_s": wall, "measured": len(searched), "failed": failed}


def interleaved(funcs: list[Any], args: list[list[Any]], rounds: int) -> list[list[float]]:
    """Seconds per run of each function, timed round-robin `rounds` times."""
    import tvm

    timers = [f.time_evaluator("main", tvm.cpu(), number=1, repeat=1, min_repeat_ms=ROUND_MS)
              for f in funcs]  # fmt: skip
    for timer, a in zip(timers, args, strict=True):  # warm both before the first round
        timer(*a)
    out: list[list[float]] = [[] for _ in funcs]
    for _ in range(rounds):
        for i, (timer, a) in enumerate(zip(timers, args, strict=True)):
            out[i].append(float(timer(*a).results[0]))
    return out


def geomean(xs: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM starts its pool

    import tvm

    from tunelab.platform.execution import connect_ray
    from tunelab.platform.kinds import get_kind
    from tunelab.platform.spec import parse_spec
    from tunelab.workers.pipeline_search.build_llvm import llvm_host_cpu
    from tunelab.workers.pipeline_search.measure import load_llvm_module
    from tunelab.workers.pipeline_search.reference import check_output, reference_data
    from tunelab.workers.pipeline_search.workloads import arg_shapes, parse_workload, tensor_program

    cpu = llvm_host_cpu() or "generic"
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": args.threads})
    t0 = time.perf_counter()
    connect_ray(None)
    ray_start = time.perf_counter() - t0
    kind = get_kind("pipeline-search")
    lines = [
        f"# tunelab model search vs MetaSchedule on {cpu}, {args.threads} thread(s) each "
        f"(TVM_NUM_THREADS={args.threads}; {os.cpu_count()} cores), {args.trials} trials "
        f"each, seeds 0-{args.seeds - 1}",
        f"# MetaSchedule: evolutionary search, XGB model, LocalBuilder timeout "
        f"{MS_BUILD_TIMEOUT_S} s, LocalRunner timeout {MS_RUN_TIMEOUT_S} s, its default "
        "evaluator (number 3, min_repeat_ms 100)",
        "# tunelab: strategy model (combined cost model), batch 8, repeats 5 x 20 ms; wall "
        "time is api.submit's (job start-up, builds, measurements, final rounds)",
        f"# Ray start-up before the first job, not in any wall time: {ray_start:.1f} s",
        f"# best kernels re-timed interleaved, {args.rounds} rounds of >= {ROUND_MS} ms; "
        "ratio = MetaSchedule time / tunelab time per round (> 1: tunelab faster)",
        "",
        f"{'workload':<16} {'seed':>4} {'MS s':>6} {'MS fail':>7} {'TL s':>6} {'TL fail':>7} "
        f"{'MS best ms':>10} {'TL best ms':>10} {'ratio med':>9} {'range':>13}",
    ]  # fmt: skip
    print("\n".join(lines), flush=True)
    per_workload: dict[str, list[float]] = {}
    for name in args.workloads:
        workload = WORKLOADS[name]
        wl = parse_workload(workload)
        mod = tvm.IRModule({"main": tensor_program(wl)})
        inputs, ref = reference_data(workload, {})
        _, out_shape, out_dtype = arg_shapes(wl)[-1]

        def tensors(inputs: list[Any] = inputs, shape: tuple = out_shape) -> list[Any]:
            out = tvm.runtime.tensor(np.full(shape, np.nan, out_dtype))  # noqa: B023
            return [tvm.runtime.tensor(x) for x in inputs] + [out]

        for seed in range(args.seeds):
            ms_sch, ms_info = tune_metaschedule(mod, target, args.trials, seed)
            ms_mod = tvm.compile(ms_sch.mod, target=target).mod
            spec, best, tl_info = tune_tunelab(workload, args.trials, seed, args.threads, cpu)
            tl_mod = load_llvm_module(kind.build(parse_spec(spec), best).artifact)
            ms_args, tl_args = tensors(), tensors()
            for f, a in ((ms_mod, ms_args), (tl_mod, tl_args)):
                f["main"](*a)
                check_output(a[-1].numpy(), ref, wl.dtype)  # a wrong kernel stops the bench
            ms_t, tl_t = interleaved([ms_mod, tl_mod], [ms_args, tl_args], args.rounds)
            ratios = [m / t for m, t in zip(ms_t, tl_t, strict=True)]
            med = statistics.median(ratios)
            per_workload.setdefault(name, []).append(med)
            ms_fail = f"{ms_info['build']}b+{ms_info['run']}r"
            row = (
                f"{name:<16} {seed:>4} {ms_info['wall_s']:>6.0f} {ms_fail:>7} "
                f"{tl_info['wall_s']:>6.0f} {tl_info['failed']:>7} "
                f"{statistics.median(ms_t) * 1e3:>10.3f} {statistics.median(tl_t) * 1e3:>10.3f} "
                f"{med:>8.3f}x {min(ratios):>6.3f}-{max(ratios):.3f}"
            )
            print(row, flush=True)
            lines.append(row)
            lines.append(f"{'':<21} tunelab best: {best}")
    lines.append("")
    lines.append(f"{'workload':<16} {'median over seeds':>17} {'min':>7} {'max':>7}")
    for name, meds in per_workload.items():
        lines.append(f"{name:<16} {statistics.median(meds):>16.3f}x {min(meds):>6.3f}x "
                     f"{max(meds):>6.3f}x")  # fmt: skip
    medians = [statistics.median(m) for m in per_workload.values()]
    lines.append(
        f"geometric mean over {len(medians)} workloads: tunelab's best kernel is "
        f"{geomean(medians):.3f}x MetaSchedule's speed (spread {geomean([min(m) for m in per_workload.values()]):.3f}"  # noqa: E501
        f"-{geomean([max(m) for m in per_workload.values()]):.3f}x)"
    )
    emit(lines, args.out)


if __name__ == "__main__":
    main()
