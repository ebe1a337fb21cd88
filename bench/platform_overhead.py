"""Platform overhead: trials recorded per second, tunelab vs Optuna's RDBStorage.

Both record the same number of trivial trials in fresh databases on the same PostgreSQL,
side by side in one run. tunelab's figure is end to end: the job is submitted, every
candidate is scheduled on Ray (a build task and a measurement call) and recorded. Then a
100,000-trial job runs in a child process whose peak resident memory is reported.

    python bench/platform_overhead.py [--trials 2000] [--big 100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000, help="trials for the side-by-side run")
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
    lines = [
        "# tunelab platform overhead vs Optuna RDBStorage (same PostgreSQL, same trial count)",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        f"local Ray start-up (not counted below): {ray_start:.1f} s",
        "",
    ]
    with fresh_pg_database("tunelab") as url:
        tl = run_tunelab(url, args.trials)
    with fresh_pg_database("optuna") as url:
        op = run_optuna(url, args.trials)
    tl_rate, op_rate = args.trials / tl, args.trials / op
    lines += [
        f"{'system':<28}{'trials':>8}{'seconds':>10}{'trials/s':>11}",
        f"{'tunelab (Ray + recorder)':<28}{args.trials:>8}{tl:>10.2f}{tl_rate:>11.1f}",
        f"{'optuna RDBStorage':<28}{args.trials:>8}{op:>10.2f}{op_rate:>11.1f}",
        f"ratio tunelab/optuna: {tl_rate / op_rate:.1f}x (target >= 10x)",
    ]
    print("\n".join(lines), flush=True)
    if args.big:
        import ray

        address = ray.get_runtime_context().gcs_address
        with fresh_pg_database("big") as url:
            env = {**os.environ, "RAY_ADDRESS": address}
            proc = subprocess.run(
                [sys.executable, __file__, "--child-big", url, str(args.big)],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
        big = [ln for ln in proc.stdout.splitlines() if ln.startswith("BIG ")]
        if not big:
            raise SystemExit(f"the {args.big}-trial run failed:\n{proc.stderr[-3000:]}")
        _, n, secs, peak = big[0].split()
        extra = [
            "",
            f"{n}-trial job: {float(secs):.1f} s ({int(n) / float(secs):.0f} trials/s), "
            f"driver peak RSS {float(peak):.0f} MB (target < 1024 MB)",
        ]
        print("\n".join(extra), flush=True)
        lines += extra
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
