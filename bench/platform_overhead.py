"""Platform overhead: trials recorded per second, tunelab vs Optuna's RDBStorage.

Both record the same number of trivial trials in fresh databases on the same PostgreSQL,
interleaved: each round runs both systems, the order alternating, and the report gives
each system's min/median/max and the ratio of medians with the spread of the per-round
(paired) ratios. tunelab's figure is end to end on an already running local Ray: the job
is submitted, every candidate scheduled (a build task and a measurement call) and
recorded; Ray's own start-up is measured once and reported apart. Then the time from
`tunelab submit --wait` to a one-trial job's end, cold (a new process that starts Ray)
and warm (joining the running Ray); then a 100,000-trial job in a child process whose
peak resident memory is reported.

    python bench/platform_overhead.py [--trials 200 2000] [--rounds 3] [--big 100000]
                                      [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchdb import fresh_pg_database  # noqa: E402


def run_tunelab(url: str, n: int) -> float:
    """Seconds from submitting an n-trial trivial job to its last trial recorded."""
    from tunelab.platform import jobs
    from tunelab.platform.execution import run_job
    from tunelab.platform.spec import parse_spec
    from tunelab.schema.db import get_engine

    engine = get_engine(url)
    spec = parse_spec({"name": "overhead", "kind": "testing-trivial", "workload": {"n": n}})
    t0 = time.perf_counter()
    job_id = jobs.create_job(engine, spec)
    run_job(engine, job_id)
    elapsed = time.perf_counter() - t0
    job = jobs.get_job(engine, job_id)
    assert job.n_done == n and job.n_ok == n, (job.n_done, job.n_ok)
    return elapsed


def run_optuna(url: str, n: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    t0 = time.perf_counter()
    study.optimize(lambda t: t.suggest_int("i", 0, 10**6) * 1e-9, n_trials=n)
    elapsed = time.perf_counter() - t0
    assert len(study.trials) == n
    storage.engine.dispose()
    return elapsed


def big_job_child(url: str, n: int) -> None:
    """Run an n-trial job in this (child) process and print its peak RSS."""
    from tunelab.platform.execution import connect_ray

    connect_ray()
    elapsed = run_tunelab(url, n)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"BIG {n} {elapsed:.3f} {peak_mb:.1f}", flush=True)


def spread(xs: list[float]) -> str:
    return f"min {min(xs):9.1f}  median {statistics.median(xs):9.1f}  max {max(xs):9.1f}"


def submit_seconds(env: dict[str, str]) -> float:
    """Wall seconds of `tunelab submit --wait` of a one-trial job, in a new process."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "one.yaml"
        spec.write_text("name: one\nkind: testing-trivial\nworkload: {n: 1}\n")
        env = {**env, "TUNELAB_DATA_DIR": tmp}
        t0 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "tunelab.platform.cli", "submit", str(spec), "--wait"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            raise SystemExit(f"submit failed:\n{run.stderr[-3000:]}")
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size")
    ap.add_argument("--big", type=int, default=100_000, help="trials of the memory run (0: skip)")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    ap.add_argument("--child-big", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_big:
        big_job_child(args.child_big[0], int(args.child_big[1]))
        return

    from tunelab.platform.execution import connect_ray

    t0 = time.perf_counter()
    connect_ray()
    ray_start = time.perf_counter() - t0
    import ray

    address = ray.get_runtime_context().gcs_address
    lines = [
        "# tunelab platform overhead vs Optuna RDBStorage (same PostgreSQL, same trial count)",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; both record from one process; trivial trials "
        "(tunelab's measure nothing: threads do not matter here)",
        f"local Ray start-up (not counted below): {ray_start:.1f} s",
        f"{args.rounds} interleaved rounds per size, the order alternating; trials/s:",
        "",
    ]
    print("\n".join(lines), flush=True)
    for n in args.trials:
        rates: dict[str, list[float]] = {"tunelab": [], "optuna": []}
        for r in range(args.rounds):
            order = ["tunelab", "optuna"] if r % 2 == 0 else ["optuna", "tunelab"]
            for system in order:
                with fresh_pg_database(system) as url:
                    run = run_tunelab if system == "tunelab" else run_optuna
                    rates[system].append(n / run(url, n))
        paired = [t / o for t, o in zip(rates["tunelab"], rates["optuna"], strict=True)]
        ratio = statistics.median(rates["tunelab"]) / statistics.median(rates["optuna"])
        target = 5 if n <= 200 else 10
        block = [
            f"{n} trials:",
            f"  tunelab (running Ray + recorder)  {spread(rates['tunelab'])}",
            f"  optuna RDBStorage                 {spread(rates['optuna'])}",
            f"  ratio of medians tunelab/optuna: {ratio:.1f}x (per round "
            f"{min(paired):.1f}-{max(paired):.1f}x; target >= {target}x)",
        ]
        print("\n".join(block), flush=True)
        lines += block

    warm_env = {**os.environ, "RAY_ADDRESS": address}
    cold_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    warm = [submit_seconds(warm_env) for _ in range(3)]
    cold = [submit_seconds(cold_env) for _ in range(2)]
    block = [
        "",
        "`tunelab submit --wait` of a one-trial job, whole process (CLI start-up, database, "
        "Ray, the trial, the summary), seconds:",
        f"  warm (joins the running Ray)   {spread(warm)}  (target < 5 s)",
        f"  cold (starts a local Ray)      {spread(cold)}",
    ]
    print("\n".join(block), flush=True)
    lines += block
    if args.big:
        with fresh_pg_database("big") as url:
            proc = subprocess.run(
                [sys.executable, __file__, "--child-big", url, str(args.big)],
                capture_output=True, text=True, env=warm_env, check=False,
            )  # fmt: skip
        big = [ln for ln in proc.stdout.splitlines() if ln.startswith("BIG ")]
        if not big:
            raise SystemExit(f"the {args.big}-trial run failed:\n{proc.stderr[-3000:]}")
        _, n, secs, peak = big[0].split()
        block = [
            "",
            f"{n}-trial job: {float(secs):.1f} s ({int(n) / float(secs):.0f} trials/s), "
            f"driver peak RSS {float(peak):.0f} MB (target < 1024 MB)",
        ]
        print("\n".join(block), flush=True)
        lines += block
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
