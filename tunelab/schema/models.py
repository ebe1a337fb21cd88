"""The trial database: jobs, workloads, environments and trials.

The same models run on SQLite and PostgreSQL; JSON columns become JSONB on PostgreSQL.
Alembic migrations in `migrations/` create these tables; the models are the source the
migrations were written from, and a test checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Defined without SQLAlchemy (the CLI offers them as choices); importable from here too.
from tunelab.schema.statuses import TERMINAL_JOB_STATUSES, Direction, JobStatus, TrialStatus  # noqa: F401

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
    # The primary objective every ranking of this job follows (the kind declares it).
    objective: Mapped[str] = mapped_column(String(64), default="latency_s")
    direction: Mapped[str] = mapped_column(String(8), default=Direction.minimize)
    best_value: Mapped[float | None] = mapped_column(Float)
    best_latency_s: Mapped[float | None] = mapped_column(Float)
    # The final re-measurement's verdict: winner, ties, confidence intervals, baselines.
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Raised by every claim: a driver whose lease is no longer the job's has been taken
    # over and stops (its writes are refused).
    lease: Mapped[int] = mapped_column(Integer, default=0)
    best_trial_id: Mapped[int | None] = mapped_column(BigId)
    # Trials and final rounds measured on a busy node (platform/health.py): the job's mark.
    busy_trials: Mapped[int] = mapped_column(Integer, default=0)
    busy_rounds: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    driver_host: Mapped[str | None] = mapped_column(String(255))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    workload: Mapped[Workload] = relationship()


class Trial(Base):
    """One evaluated candidate of a job. (job, candidate) is unique: recording is idempotent.

    `candidate` is the SHA-256 of the parameters' canonical JSON (`params` holds them), so
    candidates of any size fit. `value` is the primary objective, `objectives` every named
    objective; the latency columns are filled by kinds that time their candidates.
    Platform-owned facts have columns (`baseline`, `model`, `model_version`,
    `attempt_errors`); `extra` is the kind's own."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("job_id", "candidate"),
        Index(None, "job_id", "status", "latency_median_s"),  # per-job counts and top-k
        Index(None, "job_id", "status", "value"),  # ranking by the primary objective
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    candidate: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    objectives: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    latency_median_s: Mapped[float | None] = mapped_column(Float)
    latency_mean_s: Mapped[float | None] = mapped_column(Float)
    latency_stdev_s: Mapped[float | None] = mapped_column(Float)
    latency_min_s: Mapped[float | None] = mapped_column(Float)
    n_repeats: Mapped[int | None] = mapped_column(Integer)
    latencies_s: Mapped[list[float] | None] = mapped_column(JSONType)
    predicted_cost: Mapped[float | None] = mapped_column(Float)
    build_s: Mapped[float | None] = mapped_column(Float)
    run_s: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    attempt_errors: Mapped[list[str] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    worker_node: Mapped[str | None] = mapped_column(String(255))
    # What else ran on the node around the measurement (health.merge); busy: true marks it.
    node_health: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    baseline: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[dict[str, Any]]
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Remeasurement(Base):
    """A trial measured again after the search, interleaved with the other finalists
    (and the baseline) in rounds: the evidence behind a job's verdict. Not a trial: it
    is charged to no budget."""

    __tablename__ = "remeasurements"
    __table_args__ = (UniqueConstraint("trial_id", "round"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    latencies_s: Mapped[list[float]] = mapped_column(JSONType)
    latency_median_s: Mapped[float] = mapped_column(Float)
    worker_node: Mapped[str | None] = mapped_column(String(255))
    node_health: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Step(Base):
    """An intermediate report of a long evaluation (`trial_key` = its candidate) or of
    the job itself (`trial_key` = ''): a learning curve is a job's or trial's steps.
    (job, trial_key, step) is unique: a step reported twice keeps its first record."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("job_id", "trial_key", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    trial_key: Mapped[str] = mapped_column(String(64), default="")
    step: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]]
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Blob(Base):
    """Content-addressed bytes (SHA-256), stored as chunks so nothing loads them whole."""

    __tablename__ = "blobs"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    n_chunks: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BlobChunk(Base):
    __tablename__ = "blob_chunks"
    __table_args__ = (PrimaryKeyConstraint("blob_hash", "seq"),)

    blob_hash: Mapped[str] = mapped_column(ForeignKey("blobs.hash", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Artifact(Base):
    """A named artifact of a job (a checkpoint, a rewritten graph, a kernel's source),
    pointing at a blob; any node reaches it through the database. Checkpoints beyond a
    job's retention are pruned unless pinned."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"), Index(None, "blob_hash"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    trial_key: Mapped[str] = mapped_column(String(64), default="")
    checkpoint: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int | None] = mapped_column(BigInteger)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    blob_hash: Mapped[str] = mapped_column(ForeignKey("blobs.hash"))
    size: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KindData(Base):
    """Data a kind keeps across jobs (per-operator costs, tuning records), keyed by the
    kind and a hash of its key, so no kind needs tables of its own."""

    __tablename__ = "kind_data"
    __table_args__ = (UniqueConstraint("kind", "key_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))
    key: Mapped[dict[str, Any]]
    value: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def trial_baseline() -> Any:
    """SQL: the library a trial measured as a baseline, NULL for a searched candidate.
    Baselines are references beside the search, never its result."""
    return Trial.baseline
