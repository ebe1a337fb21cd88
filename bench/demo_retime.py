"""Re-time a CPU job's best kernel against NumPy, each in a clean process, in paired rounds.

Checks what a job printed ('baseline numpy (2 threads): ... x faster, 95% CI ...'): the
job's best kernel is rebuilt from its parameters and timed in one fresh process (TVM, no
NumPy BLAS work), NumPy's matmul in another (the library process: no TVM), both at
`--threads`; each round times both, order shuffled, samples of >= 20 ms; the ratio of
medians NumPy / kernel gets the protocol's paired interval (`noise.paired_ratio`).

    python bench/demo_retime.py --db sqlite:////tmp/demo.db --job 1 [--threads 2]
        [--rounds 31] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import report

SAMPLE_S = 0.02


def sample(run: Any) -> float:
    """Seconds per call of `run`, called for at least SAMPLE_S (report.sample)."""
    return report.sample(run, SAMPLE_S)


def kernel_server(threads: int, params: dict[str, Any]) -> None:
    """A clean process with the kernel: one sample per line read on stdin."""
    from tunelab.workers import threads as thread_policy

    thread_policy.apply(threads)
    import aa

    aa.KERNEL_PARAMS.clear()
    aa.KERNEL_PARAMS.update(params)
    run = aa.kernel_thing()
    for _ in range(5):
        run()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    for _ in sys.stdin:
        pickle.dump(sample(run), out)
        out.flush()


def retime(workload: dict, params: dict, threads: int, rounds: int, seed: int) -> str:
    import numpy as np

    from tunelab.platform.noise import paired_ratio
    from tunelab.platform.spec import parse_spec
    from tunelab.workers.pipeline_search.measure import measure_numpy
    from tunelab.workers.threads import thread_env

    env = {**os.environ, **thread_env(threads)}
    cmd = [sys.executable, __file__, "--kernel", str(threads), json.dumps(params)]
    k = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert k.stdin is not None and k.stdout is not None
    spec = parse_spec({
        "name": "retime", "kind": "pipeline-search", "workload": workload,
        "measure": {"threads": threads, "warmup": 1, "repeats": 1,
                    "min_repeat_ms": round(SAMPLE_S * 1e3)},
    })  # fmt: skip
    cache: dict[Any, Any] = {}
    measure_numpy(spec, {"baseline": "numpy"}, cache)

    def kernel() -> float:
        k.stdin.write(b"go\n")  # type: ignore[union-attr]
        k.stdin.flush()  # type: ignore[union-attr]
        return pickle.load(k.stdout)  # type: ignore[arg-type]

    def numpy() -> float:
        return measure_numpy(spec, {"baseline": "numpy"}, cache).latencies_s[0]

    runs = {"kernel": kernel, "numpy": numpy}
    got: dict[str, list[float]] = {key: [] for key in runs}
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in order.permutation(len(runs)):
            key = list(runs)[i]
            got[key].append(runs[key]())
    k.stdin.close()
    k.wait()
    ratio, (lo, hi) = paired_ratio(got["numpy"], got["kernel"])
    kern, nump = statistics.median(got["kernel"]), statistics.median(got["numpy"])
    return (
        f"{threads} threads, {rounds} paired rounds: kernel {kern * 1e3:.3f} ms, NumPy "
        f"{nump * 1e3:.3f} ms: {ratio:.2f}x [95% CI {lo:.2f}-{hi:.2f}]; 1-min load "
        f"{os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db")
    parser.add_argument("--job", type=int)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--kernel", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kernel:
        kernel_server(int(args.kernel[0]), json.loads(args.kernel[1]))
        return
    from report import emit

    from tunelab.platform import api

    job = api.get_job(args.job, db=args.db)
    best = next(t for t in api.trials(args.job, db=args.db) if t.id == job.best_trial_id)
    printed = [
        f"{b['key']}: {b['ratio']:.2f}x [95% CI {b['ci'][0]:.2f}-{b['ci'][1]:.2f}] "
        f"after {job.verdict['rounds']} final rounds"
        for b in (job.verdict or {}).get("baselines", [])
    ]
    lines = [
        f"# job {job.id} ({job.name}): best trial {best.id} {best.params}",
        "# the job's verdict, NumPy's median / the best's: " + "; ".join(printed),
        "# re-timed in clean processes (the kernel; NumPy in the library process):",
    ]
    workload = job.spec["workload"]
    lines += [retime(workload, best.params, args.threads, args.rounds, seed)
              for seed in range(args.repeat)]  # fmt: skip
    emit(lines, args.out)


if __name__ == "__main__":
    main()
