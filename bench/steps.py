"""Intermediate steps recorded per second: tunelab's StepWriter vs Optuna's trial.report.

Both write to one fresh PostgreSQL database (Optuna's tables in a schema of their own,
as both have a `trials` table), from this one process, each through one connection at
a time, in interleaved rounds: each round records one trial's steps with each system,
the order alternating between rounds. tunelab's figure includes its final flush;
Optuna's is `trial.report(value, step)` per step (RDBStorage commits each). Each side's
rate is what it measured at its own size; nothing is extrapolated. Then one
1,000,000-step job is written with StepWriter and its curve read back with `curve()`.

    python bench/steps.py [--steps 100000] [--optuna-steps 10000] [--rounds 3]
                          [--big 1000000] [--buckets 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from benchdb import fresh_pg_database  # noqa: E402
from report import emit  # noqa: E402
from sqlalchemy import Engine, event, func, insert, select, text  # noqa: E402

from tunelab.platform.steps import StepWriter, curve  # noqa: E402
from tunelab.schema.db import get_engine  # noqa: E402
from tunelab.schema.models import Job, Step, Workload  # noqa: E402

OPTUNA_SCHEMA = "optuna"


def loss(step: int) -> float:
    return 1.0 / math.sqrt(step + 1)


def make_job(engine: Engine, name: str) -> int:
    """A job row to hang steps on (the bench needs no kind or executor)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        workload = conn.execute(
            insert(Workload.__table__)
            .values(hash=uuid.uuid4().hex, kind="bench", description=name, definition={},
                    created_at=now)
            .returning(Workload.__table__.c.id)
        ).scalar_one()  # fmt: skip
        return conn.execute(
            insert(Job.__table__)
            .values(name=name, kind="bench", spec={}, workload_id=workload, target="cpu",
                    status="running", n_planned=0, n_done=0, n_ok=0, n_failed=0,
                    objective="loss", direction="minimize", created_at=now)
            .returning(Job.__table__.c.id)
        ).scalar_one()  # fmt: skip


def write_tunelab(engine: Engine, job_id: int, n: int, trial_key: str) -> float:
    """Seconds to record n steps of one trial with a StepWriter, final flush included."""
    writer = StepWriter(engine, job_id)
    t0 = time.perf_counter()
    for step in range(n):
        writer.add(step, {"loss": loss(step)}, trial_key)
        if writer.due():
            writer.flush()
    writer.flush()
    elapsed = time.perf_counter() - t0
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count()).where(Step.job_id == job_id, Step.trial_key == trial_key)
        ).scalar_one()
    assert count == n, (count, n)
    return elapsed


def write_optuna(url: str, n: int) -> float:
    """Seconds for n `trial.report` calls on one trial of a new study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    t0 = time.perf_counter()
    for step in range(n):
        trial.report(loss(step), step)
    elapsed = time.perf_counter() - t0
    study.tell(trial, loss(n))
    assert len(study.trials[-1].intermediate_values) == n
    storage.engine.dispose()
    return elapsed


def stats(values: list[float]) -> str:
    return (
        f"min {min(values):>10.1f}  median {statistics.median(values):>10.1f}  "
        f"max {max(values):>10.1f}"
    )


def timed_reads(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def explain_curve(engine: Engine, job_id: int, buckets: int) -> list[str]:
    """EXPLAIN ANALYZE of the statements one curve() call runs (plans' node lines)."""
    captured: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        curve(engine, job_id, "loss", buckets=buckets)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    lines = []
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        n = 0
        for statement, parameters in captured:
            head = statement.split(None, 1)[0].upper()
            if head in ("SET", "SAVEPOINT", "RELEASE"):  # SET changes the plans: run it
                cur.execute(statement, parameters)
                continue
            if statement.strip().upper() == "SELECT 1":  # the pool's pre-ping
                continue
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = [row[0] for row in cur.fetchall()]
            n += 1
            lines.append(f"  query {n}: {' '.join(statement.split())[:160]}…")
            lines += [f"    {p}" for p in plan if "(cost=" in p or "Execution Time" in p]
        raw.rollback()
    finally:
        raw.close()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000, help="tunelab steps per round")
    ap.add_argument("--optuna-steps", type=int, default=10_000, help="Optuna steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big", type=int, default=1_000_000, help="steps of the curve job (0: skip)")
    ap.add_argument("--buckets", type=int, default=1000)
    ap.add_argument("--reads", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import optuna
    import psycopg
    import sqlalchemy

    lines: list[str] = []
    with fresh_pg_database("steps") as url:
        engine = get_engine(url)
        with engine.begin() as conn:
            pg_version = conn.execute(text("SHOW server_version")).scalar_one()
            conn.execute(text(f"CREATE SCHEMA {OPTUNA_SCHEMA}"))
        optuna_url = f"{url}?options=-csearch_path%3D{OPTUNA_SCHEMA}"
        job = make_job(engine, "steps-bench")

        tl_rates: list[float] = []
        op_rates: list[float] = []
        for r in range(args.rounds):
            trial_key = hashlib.sha256(f"round {r}".encode()).hexdigest()
            order = ["tunelab", "optuna"] if r % 2 == 0 else ["optuna", "tunelab"]
            for system in order:
                if system == "tunelab":
                    s = write_tunelab(engine, job, args.steps, trial_key)
                    tl_rates.append(args.steps / s)
                    print(f"round {r + 1} tunelab {args.steps} steps {s:.2f} s", flush=True)
                else:
                    s = write_optuna(optuna_url, args.optuna_steps)
                    op_rates.append(args.optuna_steps / s)
                    print(f"round {r + 1} optuna {args.optuna_steps} steps {s:.2f} s", flush=True)

        lines += [
            "Intermediate steps recorded per second: tunelab StepWriter vs Optuna trial.report",
            f"python {platform.python_version()}, PostgreSQL {pg_version}, "
            f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"optuna {optuna.__version__}, {os.cpu_count()} CPUs (load average at the end: "
            f"{os.getloadavg()[0]:.1f}, other work shares this machine)",
            "one fresh PostgreSQL database (Optuna's tables in schema 'optuna'); both write "
            "from this one process through one connection, one trial per round;",
            f"{args.rounds} interleaved rounds, the order alternating; each side's rate is "
            "measured at its own size, nothing extrapolated",
            "",
            f"{'system':<34}{'steps/round':>12}   steps/s",
            f"{'tunelab StepWriter (5000/flush)':<34}{args.steps:>12}   {stats(tl_rates)}",
            f"{'optuna RDBStorage trial.report':<34}{args.optuna_steps:>12}   {stats(op_rates)}",
            f"ratio of medians tunelab/optuna: "
            f"{statistics.median(tl_rates) / statistics.median(op_rates):.0f}x",
        ]

        if args.big:
            big = make_job(engine, "steps-big")
            s = write_tunelab(engine, big, args.big, "")
            times = timed_reads(
                lambda: curve(engine, big, "loss", buckets=args.buckets), args.reads
            )
            points = curve(engine, big, "loss", buckets=args.buckets)
            assert len(points) == min(args.buckets, args.big), len(points)
            assert sum(p.count for p in points) == args.big
            lines += [
                "",
                f"one job of {args.big} steps written with StepWriter: {s:.2f} s, "
                f"{args.big / s:.0f} steps/s",
                f"curve(buckets={args.buckets}) -> {len(points)} points, read {args.reads} times: "
                f"median {statistics.median(times) * 1e3:.0f} ms "
                f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f})",
                "plans of curve()'s queries (EXPLAIN ANALYZE, after the timed reads):",
                *explain_curve(engine, big, args.buckets),
            ]
        engine.dispose()
    emit(lines, args.out)


if __name__ == "__main__":
    main()
