"""Is the NumPy baseline timed fairly? The same matmul timed three ways, in paired rounds.

In one process at T threads (TVM's pool and NumPy's BLAS both sized T), with the CPU
demo's best kernel built and loaded as a measurement worker has it, each round times, in
a shuffled order (the protocol's `noise.paired_ratio` then compares them round by round):

- `beside TVM (before)`: the kernel for >= 20 ms, then NumPy in this same process, as the
  worker timed the baseline before (its final rounds interleave the two);
- `own process (now)`: the kernel for >= 20 ms, then NumPy through `measure_numpy`, in the
  worker's library process (`workers/pipeline_search/library.py`);
- `alone`: 0.1 s idle, then NumPy in that process: a clean process, nothing beside it.

NumPy's figure is seconds per call over >= 20 ms. `--spin` also runs the whole with TVM's
`TVM_THREAD_POOL_SPIN_COUNT` set (its idle workers spin, yielding, after each kernel).

    python bench/library_baseline.py [--threads 1 2] [--rounds 21] [--spin -1 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

N = 512
import report  # noqa: E402

SAMPLE_S = 0.02
MODES = ("beside", "own", "alone")
LABELS = {"beside": "beside TVM (before)", "own": "own process (now)", "alone": "alone"}


def sample(run: Any) -> float:
    """Seconds per call of `run`, called for at least SAMPLE_S (report.sample)."""
    return report.sample(run, SAMPLE_S)


def child(threads: int, rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Every mode's NumPy seconds per round, and the kernel's, at `threads` threads."""
    from tunelab.workers import threads as thread_policy

    thread_policy.apply(threads)
    import aa
    import numpy as np

    from tunelab.platform.spec import parse_spec
    from tunelab.workers.pipeline_search.measure import measure_numpy

    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (N, N)).astype("float32") for _ in range(2))
    out = np.empty((N, N), "float32")
    kernel = aa.kernel_thing()
    spec = parse_spec({
        "name": "fair", "kind": "pipeline-search",
        "workload": {"op": "gemm", "M": N, "N": N, "K": N, "dtype": "float32"},
        "measure": {"threads": threads, "warmup": 1, "repeats": 1,
                    "min_repeat_ms": round(SAMPLE_S * 1e3)},
    })  # fmt: skip
    cache: dict[Any, Any] = {}

    def own() -> float:
        return measure_numpy(spec, {"baseline": "numpy"}, cache).latencies_s[0]

    own()  # start the library process
    kern: list[float] = []

    def after_kernel(numpy_sample: Any) -> float:
        kern.append(sample(kernel))
        return numpy_sample()

    runs = {
        "beside": lambda: after_kernel(lambda: sample(lambda: np.matmul(a, b, out=out))),
        "own": lambda: after_kernel(own),
        "alone": lambda: (time.sleep(0.1), own())[1],
    }
    got: dict[str, list[float]] = {k: [] for k in runs}
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in order.permutation(len(MODES)):
            got[MODES[i]].append(runs[MODES[i]]())
    return {**got, "kernel": kern}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, os.cpu_count() or 1])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--spin", type=int, nargs="*", default=[-1],
                        help="TVM_THREAD_POOL_SPIN_COUNT values (-1: TVM's default)")  # fmt: skip
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rounds)))
        return
    from report import emit

    from tunelab.platform.noise import paired_ratio
    from tunelab.workers.threads import thread_env

    def load() -> str:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())

    lines = [
        f"# NumPy matmul {N}^3 float32 after the demo's best kernel, {args.rounds} paired "
        f"rounds (order shuffled), samples >= {SAMPLE_S * 1e3:g} ms; {os.cpu_count()} cores; "
        f"load average before: {load()}",
        f"{'threads':>7} {'TVM spin':>9} {'NumPy timed':<20} {'median':>10} {'fastest':>10} "
        f"{'÷ alone [95% CI]':>22} {'kernel':>10}",
    ]
    for threads in args.threads:
        for spin in args.spin:
            env = {**os.environ, **thread_env(threads)}
            if spin >= 0:
                env["TVM_THREAD_POOL_SPIN_COUNT"] = str(spin)
            cmd = [sys.executable, __file__, "--child", str(threads), "--rounds", str(args.rounds)]
            out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            kern = f"{statistics.median(got['kernel']) * 1e3:.3f} ms"
            for mode in MODES:
                ratio, (lo, hi) = paired_ratio(got[mode], got["alone"])
                vs = "-" if mode == "alone" else f"{ratio:.2f}x [{lo:.2f}-{hi:.2f}]"
                med, fast = statistics.median(got[mode]) * 1e3, min(got[mode]) * 1e3
                k = kern if mode == MODES[0] else ""
                lines.append(
                    f"{threads:>7} {'default' if spin < 0 else spin:>9} {LABELS[mode]:<20} "
                    f"{med:>7.3f} ms {fast:>7.3f} ms {vs:>22} {k:>10}"
                )
    lines.append(f"# load average after: {load()}")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
