"""Scaling: trials per second on the no-Docker cluster with 1, 2 and 4 worker nodes.

Each measurement holds its worker for a fixed time (default 100 ms), so the job is
measurement-bound; efficiency at n workers = rate(n) / (n x rate(1)). Two rates per run:
end to end (submit to last trial, worker start-up included) and steady (between the first
and the last recorded trial).

    python bench/scaling.py [--seconds 0.1] [--per-worker 60] [--workers 1 2 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchdb import fresh_pg_database  # noqa: E402


def child(url: str, trials: int, seconds: float) -> None:
    """Drive one job on the cluster in RAY_ADDRESS; print (end-to-end, steady) rates."""
    from sqlalchemy import func, select

    from tunelab.platform import jobs
    from tunelab.platform.execution import connect_ray, run_job
    from tunelab.platform.spec import parse_spec
    from tunelab.schema.db import get_engine
    from tunelab.schema.models import Trial

    connect_ray()
    engine = get_engine(url)
    spec = parse_spec({"name": "scaling", "kind": "testing-trivial",
                       "workload": {"n": trials, "seconds": seconds}})  # fmt: skip
    t0 = time.perf_counter()
    job_id = jobs.create_job(engine, spec)
    run_job(engine, job_id)
    wall = time.perf_counter() - t0
    with engine.connect() as conn:
        first, last, n = conn.execute(
            select(func.min(Trial.finished_at), func.max(Trial.finished_at), func.count()).where(
                Trial.job_id == job_id
            )
        ).one()
    assert n == trials, n
    print(f"RATES {trials / wall} {(n - 1) / (last - first).total_seconds()}", flush=True)


def run(n_workers: int, trials: int, seconds: float) -> tuple[float, float]:
    """Bring up a cluster with `n_workers`, run one job from a client process, bring it down."""
    import subprocess

    from tunelab.platform import cluster

    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database(f"scale{n_workers}") as url:
        os.environ["TUNELAB_DATA_DIR"] = tmp
        state = cluster.up(workers=n_workers, cpus_per_worker=2, db_url=url, dashboard=False)
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", url, str(trials), str(seconds)],
                env={**os.environ, **state.env()}, capture_output=True, text=True, check=False,
            )  # fmt: skip
        finally:
            cluster.down()
    rates = [ln for ln in proc.stdout.splitlines() if ln.startswith("RATES ")]
    if not rates:
        raise SystemExit(f"the {n_workers}-worker run failed:\n{proc.stderr[-3000:]}")
    _, e2e, steady = rates[0].split()
    return float(e2e), float(steady)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.1, help="time each measurement takes")
    ap.add_argument("--per-worker", type=int, default=60, help="trials per worker node")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), float(args.child[2]))
        return
    lines = [
        f"# scaling on the no-Docker cluster: {args.seconds * 1e3:.0f} ms per measurement, "
        f"{args.per_worker} trials per worker",
        f"machine: {platform.machine()}, {os.cpu_count()} cores; every node on this machine",
        "",
        f"{'workers':>7}{'trials':>8}{'e2e trials/s':>14}{'e2e eff':>9}"
        f"{'steady trials/s':>17}{'steady eff':>12}",
    ]
    print("\n".join(lines), flush=True)
    base: tuple[float, float] | None = None
    for n in args.workers:
        e2e, steady = run(n, n * args.per_worker, args.seconds)
        base = base or (e2e, steady)
        row = (f"{n:>7}{n * args.per_worker:>8}{e2e:>14.2f}{e2e / (n * base[0]):>9.2f}"
               f"{steady:>17.2f}{steady / (n * base[1]):>12.2f}")  # fmt: skip
        print(row, flush=True)
        lines.append(row)
    lines.append(f"ideal: {1 / args.seconds:.1f} trials/s per worker; target efficiency at 4 "
                 "workers >= 0.9")  # fmt: skip
    print(lines[-1])
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
