"""How close tunelab's best CPU kernels come to the machine's FMA peak, at 1 and all threads.

For each thread count (a fresh process each: TVM reads its thread count once) and each
GEMM, a `model` search finds the best kernel (the noise-aware winner); then that kernel,
NumPy's matmul (its BLAS, same threads) and an FMA-throughput loop (bench/fma_peak.c,
8 independent accumulators of the widest vector, built with gcc -march=native) are timed
interleaved over several rounds. Reported per round as a fraction of the peak measured in
that round: median and range over the rounds.

    python bench/cpu_peak.py [--threads 1 2] [--trials 64] [--rounds 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import emit

HERE = Path(__file__).resolve().parent

GEMMS = [(512, 512, 512), (1024, 1024, 1024), (384, 320, 256)]


def build_peak(tmp: str) -> str:
    exe = os.path.join(tmp, "fma_peak")
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", str(HERE / "fma_peak.c"),
                    "-o", exe], check=True)  # fmt: skip
    return exe


def peak_gflops(exe: str, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "spread"}
    out = subprocess.run([exe], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def one_thread_count(threads: int, trials: int, rounds: int) -> list[dict]:
    """The rows of one thread count (run in a process whose TVM pool has `threads`)."""
    import tvm
    from threadpoolctl import threadpool_limits
    from vs_metaschedule import tune_tunelab

    from tunelab.platform.execution import connect_ray
    from tunelab.platform.kinds import get_kind
    from tunelab.platform.spec import parse_spec
    from tunelab.workers.pipeline_search.build_llvm import llvm_host_cpu
    from tunelab.workers.pipeline_search.measure import load_llvm_module

    cpu = llvm_host_cpu() or "generic"
    connect_ray(None)
    kind = get_kind("pipeline-search")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_peak(tmp)
        for m, n, k in GEMMS:
            workload = {"op": "gemm", "M": m, "N": n, "K": k, "dtype": "float32"}
            spec, best, info = tune_tunelab(workload, trials, 0, threads, cpu)
            mod = load_llvm_module(kind.build(parse_spec(spec), best).artifact)
            rng = np.random.default_rng(0)
            a = rng.uniform(-1, 1, (m, k)).astype("float32")
            b = rng.uniform(-1, 1, (k, n)).astype("float32")
            args = [tvm.runtime.tensor(a), tvm.runtime.tensor(b),
                    tvm.runtime.tensor(np.zeros((m, n), "float32"))]  # fmt: skip
            mod["main"](*args)
            ref = a.astype(np.float64) @ b.astype(np.float64)
            assert np.abs(args[2].numpy() - ref).max() / np.abs(ref).max() < 1e-5, "wrong kernel"
            timer = mod.time_evaluator("main", tvm.cpu(), number=1, repeat=1, min_repeat_ms=200)
            out = np.empty((m, n), "float32")
            flop = 2.0 * m * n * k
            kern, blas, peak = [], [], []
            with threadpool_limits(threads):
                timer(*args)
                for _ in range(rounds):
                    kern.append(flop / float(timer(*args).results[0]) / 1e9)
                    runs, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < 0.2:
                        np.matmul(a, b, out=out)
                        runs += 1
                    blas.append(flop * runs / (time.perf_counter() - t0) / 1e9)
                    peak.append(peak_gflops(exe, threads))
            rows.append({"shape": f"{m}x{n}x{k}", "threads": threads, "best": best,
                         "search_s": info["wall_s"], "kernel": kern, "blas": blas,
                         "peak": peak})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, os.cpu_count() or 1])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one thread count, in this process
        print(json.dumps(one_thread_count(args.threads[0], args.trials, args.rounds)))
        return
    rows: list[dict] = []
    for threads in args.threads:
        env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run([sys.executable, __file__, "--child", "--threads", str(threads),
                              "--trials", str(args.trials), "--rounds", str(args.rounds)],
                             env=env, check=True, stdout=subprocess.PIPE, text=True)  # fmt: skip
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    lines = [
        f"# best tunelab kernel vs the FMA peak ({os.cpu_count()} cores); model search of "
        f"{args.trials} trials per GEMM and thread count; {args.rounds} interleaved rounds "
        "of kernel (>= 200 ms), NumPy matmul (>= 200 ms) and the FMA loop (best of 5)",
        f"{'GEMM':<16} {'threads':>7} {'peak GF/s':>15} {'kernel GF/s':>15} "
        f"{'% of peak':>15} {'NumPy % of peak':>15}",
    ]  # fmt: skip
    for r in rows:
        frac = [k / p * 100 for k, p in zip(r["kernel"], r["peak"], strict=True)]
        bfrac = [k / p * 100 for k, p in zip(r["blas"], r["peak"], strict=True)]

        def cell(xs: list[float]) -> str:
            return f"{statistics.median(xs):.1f} [{min(xs):.0f}-{max(xs):.0f}]"

        lines.append(f"{r['shape']:<16} {r['threads']:>7} {cell(r['peak']):>15} "
                     f"{cell(r['kernel']):>15} {cell(frac):>15} {cell(bfrac):>15}")  # fmt: skip
    lines.append("")
    lines += [f"best {r['shape']} at {r['threads']} thread(s): {r['best']} "
              f"(search {r['search_s']:.0f} s)" for r in rows]  # fmt: skip
    emit(lines, args.out)


if __name__ == "__main__":
    main()
