"""The trial database: jobs, workloads, environments and trials.

The same models run on SQLite and PostgreSQL; JSON columns become JSONB on PostgreSQL.
Alembic migrations in `migrations/` create these tables; the models are the source the
migrations were written from, and a test checks that the two agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    """Lifecycle of a job. `interrupted` and `failed` jobs can be resumed."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"


TERMINAL_JOB_STATUSES = {JobStatus.completed, JobStatus.failed, JobStatus.cancelled}


class TrialStatus(enum.StrEnum):
    """Outcome of one evaluated candidate. Only `ok` trials can be a job's best."""

    ok = "ok"
    built = "built"  # compiled, not measured (build-only jobs, e.g. CUDA with no GPU)
    build_error = "build_error"
    run_error = "run_error"
    timeout = "timeout"
    wrong_result = "wrong_result"
    invalid = "invalid"  # rejected before building (resource limits, constraints)
    worker_lost = "worker_lost"  # the worker process died on every attempt


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONType}  # noqa: RUF012


class Workload(Base):
    """A thing to tune, content-hashed so the same workload in two jobs is one row."""

    __tablename__ = "workloads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255))
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Environment(Base):
    """Fingerprint of where a trial ran: hardware, drivers and library versions."""

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    cpu_model: Mapped[str | None] = mapped_column(String(255))
    gpu_model: Mapped[str | None] = mapped_column(String(255))
    gpu_driver: Mapped[str | None] = mapped_column(String(64))
    cuda_version: Mapped[str | None] = mapped_column(String(64))
    tvm_version: Mapped[str | None] = mapped_column(String(64))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    python_version: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """One submitted job: its spec as submitted, status and progress counts."""

    __tablename__ = "jobs"
    __table_args__ = (Index(None, "status"), Index(None, "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    target: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.pending)
    n_planned: Mapped[int] = mapped_column(Integer, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_ok: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    best_latency_s: Mapped[float | None] = mapped_column(Float)
    best_trial_id: Mapped[int | None] = mapped_column(BigId)
    error: Mapped[str | None] = mapped_column(Text)
    driver_host: Mapped[str | None] = mapped_column(String(255))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    workload: Mapped[Workload] = relationship()


class Trial(Base):
    """One evaluated candidate of a job. (job, candidate) is unique: recording is idempotent."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("job_id", "candidate"),
        Index(None, "job_id", "status", "latency_median_s"),  # per-job counts and top-k
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    candidate: Mapped[str] = mapped_column(String(512))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    latency_median_s: Mapped[float | None] = mapped_column(Float)
    latency_mean_s: Mapped[float | None] = mapped_column(Float)
    latency_stdev_s: Mapped[float | None] = mapped_column(Float)
    latency_min_s: Mapped[float | None] = mapped_column(Float)
    n_repeats: Mapped[int | None] = mapped_column(Integer)
    predicted_cost: Mapped[float | None] = mapped_column(Float)
    build_s: Mapped[float | None] = mapped_column(Float)
    run_s: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text)
    worker_node: Mapped[str | None] = mapped_column(String(255))
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    extra: Mapped[dict[str, Any]]
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def trial_baseline() -> Any:
    """SQL: the library a trial measured as a baseline (`extra.baseline`), NULL for a
    searched candidate. Baselines are references beside the search, never its result."""
    return Trial.extra["baseline"].as_string()
