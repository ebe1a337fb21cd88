"""Synthetic trials for demos, tests and benchmarks of the dashboard.

Jobs are created the normal way (`create_job` with a validated spec); their trials are
written directly with bulk inserts (PostgreSQL: COPY), then each job's counts and best
trial are refreshed as the recorder would. Nothing here is used by the dashboard itself.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from tunelab.platform.jobs import create_job, insert_ignore
from tunelab.platform.spec import parse_spec
from tunelab.schema.models import Environment, Job, JobStatus, Trial, TrialStatus

TRIAL_COLUMNS = (
    "job_id", "candidate", "params", "status", "latency_median_s", "latency_mean_s",
    "latency_stdev_s", "latency_min_s", "n_repeats", "predicted_cost", "build_s", "run_s",
    "attempts", "error", "worker_node", "environment_id", "extra", "started_at", "finished_at",
    "value", "objectives", "baseline", "model_version",
)  # fmt: skip
JSON_COLUMNS = ("params", "extra", "objectives")

CPU_ENV: dict[str, Any] = {
    "fingerprint": "c" * 64, "host": "node-1", "cpu_model": "AMD EPYC 7B13",
    "gpu_model": None, "gpu_driver": None, "cuda_version": None, "tvm_version": "0.27.0",
    "torch_version": None, "python_version": "3.11.7", "details": {"cpu_count": 2},
}  # fmt: skip
GPU_ENV: dict[str, Any] = {
    "fingerprint": "g" * 64, "host": "gpu-1", "cpu_model": "Intel Xeon 8480",
    "gpu_model": "NVIDIA H100 80GB HBM3", "gpu_driver": "550.54", "cuda_version": "12.4",
    "tvm_version": "0.27.0", "torch_version": "2.4.0", "python_version": "3.11.7",
    "details": {"sm": "sm_90"},
}  # fmt: skip


def make_job(
    engine: Engine,
    name: str,
    *,
    size: int = 512,
    strategy: str = "random",
    target: dict[str, Any] | None = None,
    status: JobStatus = JobStatus.completed,
    created_at: datetime | None = None,
) -> int:
    """Create a pipeline-search job through the normal spec path; returns its id."""
    spec = parse_spec(
        {
            "name": name,
            "kind": "pipeline-search",
            "workload": {"M": size, "N": size, "K": size},
            "target": target or {"kind": "llvm"},
            "search": {"strategy": strategy, "seed": 0},
            "measure": {"build_only": False} if not target else {},
        }
    )
    job_id = create_job(engine, spec)
    values: dict[str, Any] = {"status": status}
    if created_at is not None:
        values["created_at"] = created_at
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(**values))
    return job_id


def environment_id(engine: Engine, env: dict[str, Any]) -> int:
    """The id of `env`'s row, inserted if new."""
    with engine.begin() as conn:
        conn.execute(
            insert_ignore(engine, Environment.__table__).values(**env, created_at=datetime.now(UTC))
        )
        return conn.execute(
            select(Environment.id).where(Environment.fingerprint == env["fingerprint"])
        ).scalar_one()


def trial(
    job_id: int,
    n: int,
    params: dict[str, Any],
    status: str = TrialStatus.ok,
    latency: float | None = None,
    *,
    predicted: float | None = None,
    extra: dict[str, Any] | None = None,
    error: str | None = None,
    environment_id: int | None = None,
) -> dict[str, Any]:
    """One trial row as a dict of column values (trial `n` of its job). As the recorder
    does, `baseline` and `model_version` given in `extra` go to their own columns."""
    ok = latency is not None
    extra = dict(extra or {})
    baseline, version = extra.pop("baseline", None), extra.pop("model_version", None)
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return {
        "job_id": job_id,
        "candidate": f"c{n}",
        "params": params,
        "status": str(status),
        "latency_median_s": latency,
        "latency_mean_s": latency * 1.01 if ok else None,
        "latency_stdev_s": latency * 0.02 if ok else None,
        "latency_min_s": latency * 0.98 if ok else None,
        "n_repeats": 5 if ok else None,
        "predicted_cost": predicted,
        "build_s": 0.5,
        "run_s": 0.1 if ok else None,
        "attempts": 1,
        "error": error,
        "worker_node": "node-1",
        "environment_id": environment_id,
        "extra": extra,
        "started_at": start,
        "finished_at": start + timedelta(seconds=1),
        "value": latency,
        "objectives": {"latency_s": latency} if ok else None,
        "baseline": baseline,
        "model_version": version,
    }


def insert_trials(engine: Engine, rows: Iterable[dict[str, Any]], chunk: int = 20_000) -> int:
    """Bulk-insert trial rows (COPY on PostgreSQL, chunked executemany elsewhere)."""
    if engine.dialect.name == "postgresql":
        return _copy_trials(engine, rows, chunk)
    n = 0
    buf: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in rows:
            buf.append(row)
            if len(buf) >= chunk:
                conn.execute(insert(Trial.__table__), buf)
                n += len(buf)
                buf = []
        if buf:
            conn.execute(insert(Trial.__table__), buf)
            n += len(buf)
    return n


def _copy_trials(engine: Engine, rows: Iterable[dict[str, Any]], chunk: int) -> int:
    cols = ", ".join(TRIAL_COLUMNS)
    n = 0
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(f"COPY trials ({cols}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            out = io.StringIO()
            for row in rows:
                out.write("\t".join(_copy_value(c, row[c]) for c in TRIAL_COLUMNS))
                out.write("\n")
                n += 1
                if n % chunk == 0:
                    copy.write(out.getvalue())
                    out = io.StringIO()
            copy.write(out.getvalue())
        raw.commit()
    finally:
        raw.close()
    return n


def _copy_value(col: str, value: Any) -> str:
    if value is None:
        return "\\N"
    if col in JSON_COLUMNS:
        value = json.dumps(value)
    elif isinstance(value, datetime):
        value = value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def refresh_job(engine: Engine, job_id: int, n_planned: int | None = None) -> None:
    """Set a job's counts and best trial from its trials, as the recorder does."""
    from tunelab.platform.recorder import refresh_job as refresh_counts

    with engine.begin() as conn:
        refresh_counts(conn, job_id)
        planned = n_planned if n_planned is not None else Job.n_done
        conn.execute(update(Job).where(Job.id == job_id).values(n_planned=planned))


PIPELINED = [
    {"buffer": "A", "level": "global->local", "stages": 0},
    {"buffer": "B", "level": "global->local", "stages": 0},
]
FAILURES = [
    (TrialStatus.build_error, "tvm.error.InternalError: buffer exceeds register file"),
    (TrialStatus.timeout, "run exceeded run_timeout_s=30"),
    (TrialStatus.wrong_result, "max |out - ref| / max |ref| = 3.1e-02 > 1e-05"),
    (TrialStatus.run_error, "segmentation fault in kernel"),
]


def synthetic_trials(
    job_id: int,
    n: int,
    *,
    seed: int = 0,
    base_s: float = 2e-3,
    fail_rate: float = 0.1,
    predicted: bool = True,
    environment_id: int | None = None,
) -> Iterator[dict[str, Any]]:
    """`n` plausible trials of a CPU pipeline-search job: pipelined candidates are faster
    on average, some fail, and (if `predicted`) a noisy model predicts each latency."""
    rng = random.Random(seed)
    tiles = [16, 32, 64]
    for i in range(n):
        stages = rng.choice((1, 2, 3))
        params = {
            "tile_m": rng.choice(tiles), "tile_n": rng.choice((32, 64, 128)),
            "tile_k": rng.choice(tiles), "micro_m": rng.choice((2, 4, 8)),
            "micro_n": rng.choice((8, 16, 32)), "stages": stages,
        }  # fmt: skip
        extra = {"pipelined": [{**p, "stages": stages} for p in PIPELINED]} if stages > 1 else {}
        if rng.random() < fail_rate:
            status, err = FAILURES[i % len(FAILURES)]
            yield trial(job_id, i, params, status, None, extra=extra, error=err,
                        environment_id=environment_id)  # fmt: skip
            continue
        speed = 1.0 / (1.0 + 0.15 * (stages - 1))
        latency = base_s * speed * math.exp(rng.gauss(0, 0.35))
        pred = latency * math.exp(rng.gauss(0, 0.2)) if predicted else None
        yield trial(job_id, i, params, TrialStatus.ok, latency, predicted=pred, extra=extra,
                    environment_id=environment_id)  # fmt: skip


def seed_demo(engine: Engine) -> list[int]:
    """A small demo database: three workloads on CPU, a compared strategy, a GPU job with
    torch baselines, a job whose trials all failed and a running one. Returns job ids."""
    cpu = environment_id(engine, CPU_ENV)
    gpu = environment_id(engine, GPU_ENV)
    now = datetime.now(UTC)
    ids = []
    for i, (size, strategy) in enumerate(((512, "random"), (512, "exhaustive"), (1024, "random"))):
        job = make_job(engine, f"gemm-{size}-{strategy}", size=size, strategy=strategy,
                       created_at=now - timedelta(hours=5 - i))  # fmt: skip
        insert_trials(engine, synthetic_trials(job, 300, seed=i, base_s=2e-3 * (size / 512) ** 3,
                                               environment_id=cpu))  # fmt: skip
        refresh_job(engine, job)
        ids.append(job)
    job = make_job(engine, "gemm-2048-h100", size=2048, target={"kind": "cuda", "arch": "sm_90"},
                   created_at=now - timedelta(hours=2))  # fmt: skip
    rows = list(synthetic_trials(job, 200, seed=7, base_s=4e-4, predicted=False,
                                 environment_id=gpu))  # fmt: skip
    rows += [
        trial(job, 200, {"stages": 1}, TrialStatus.ok, 1.25e-4, extra={"baseline": "torch"},
              environment_id=gpu),
        trial(job, 201, {"stages": 1}, TrialStatus.ok, 1.2e-4, extra={"baseline": "cublas"},
              environment_id=gpu),
    ]  # fmt: skip
    insert_trials(engine, rows)
    refresh_job(engine, job)
    ids.append(job)
    job = make_job(engine, "gemm-4096-broken", size=4096, status=JobStatus.failed,
                   created_at=now - timedelta(hours=1))  # fmt: skip
    insert_trials(engine, synthetic_trials(job, 40, seed=9, fail_rate=1.0, environment_id=cpu))
    refresh_job(engine, job)
    ids.append(job)
    job = make_job(engine, "gemm-256-running", size=256, status=JobStatus.running,
                   created_at=now - timedelta(minutes=3))  # fmt: skip
    insert_trials(engine, synthetic_trials(job, 60, seed=11, base_s=3e-4, environment_id=cpu))
    refresh_job(engine, job, n_planned=200)
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job).values(started_at=now, heartbeat_at=now))
    ids.append(job)
    return ids
