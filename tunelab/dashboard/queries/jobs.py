"""Jobs as the Jobs and Job pages show them: the list, one job, its trials' statuses,
environments and most frequent errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, func, select

from tunelab.dashboard.queries.common import OK, aware
from tunelab.platform import jobs as platform_jobs
from tunelab.schema.models import Environment, Job, Trial, Workload


@dataclass(frozen=True)
class JobRow:
    """A job as the Jobs page lists it."""

    id: int
    name: str
    kind: str
    target: str
    status: str
    workload: str
    strategy: str
    n_planned: int
    n_done: int
    n_ok: int
    n_failed: int
    best_latency_s: float | None
    best_params: dict[str, Any] | None
    created_at: datetime
    error: str | None = None
    objective: str = "latency_s"
    direction: str = "minimize"
    best_value: float | None = None

    @property
    def label(self) -> str:
        return f"{self.id}: {self.name} ({self.strategy})"


def _job_select() -> Select[Any]:
    best = Trial.__table__.alias("best")
    return (
        select(
            Job.id,
            Job.name,
            Job.kind,
            Job.target,
            Job.status,
            Workload.description.label("workload"),
            Job.spec[("search", "strategy")].as_string().label("strategy"),
            Job.n_planned,
            Job.n_done,
            Job.n_ok,
            Job.n_failed,
            Job.best_latency_s,
            Job.objective,
            Job.direction,
            Job.best_value,
            best.c.params.label("best_params"),
            Job.created_at,
            Job.error,
            Job.heartbeat_at,
            Job.started_at,
        )
        .join(Workload, Workload.id == Job.workload_id)
        .outerjoin(best, best.c.id == Job.best_trial_id)
    )


def _job_row(r: Any, now: datetime) -> JobRow:
    # The row has the Job columns display_status reads (status and the heartbeat, start
    # and creation times), under their names.
    return JobRow(
        id=r.id, name=r.name, kind=r.kind, target=r.target, status=platform_jobs.display_status(r),
        workload=r.workload, strategy=r.strategy or "-", n_planned=r.n_planned,
        n_done=r.n_done, n_ok=r.n_ok, n_failed=r.n_failed, best_latency_s=r.best_latency_s,
        best_params=r.best_params, created_at=aware(r.created_at) or now, error=r.error,
        objective=r.objective, direction=r.direction, best_value=r.best_value,
    )  # fmt: skip


def job_filters(engine: Engine) -> tuple[list[str], list[str]]:
    """The job kinds and job statuses present, for filter widgets."""
    with engine.connect() as conn:
        kinds = conn.execute(select(Job.kind).distinct().order_by(Job.kind)).scalars().all()
        statuses = conn.execute(select(Job.status).distinct().order_by(Job.status)).scalars().all()
    return list(kinds), list(statuses)


def list_jobs(
    engine: Engine,
    *,
    kinds: Sequence[str] = (),
    statuses: Sequence[str] = (),
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[JobRow], int]:
    """A page of jobs, newest first, and how many match the filters."""
    conds = []
    if kinds:
        conds.append(Job.kind.in_(list(kinds)))
    if statuses:
        conds.append(Job.status.in_(list(statuses)))
    now = datetime.now(UTC)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(Job).where(*conds)).scalar_one()
        rows = conn.execute(
            _job_select().where(*conds).order_by(Job.id.desc()).limit(limit).offset(offset)
        ).all()
    return [_job_row(r, now) for r in rows], total


def get_job(engine: Engine, job_id: int) -> JobRow | None:
    """One job, or None."""
    with engine.connect() as conn:
        r = conn.execute(_job_select().where(Job.id == job_id)).first()
    return _job_row(r, datetime.now(UTC)) if r else None


def status_counts(engine: Engine, job_id: int) -> dict[str, int]:
    """Trials of a job by status, most frequent first (tunelab.platform.jobs's counts)."""
    counts = platform_jobs.status_counts(engine, job_id)
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def job_environments(engine: Engine, job_id: int) -> list[dict[str, Any]]:
    """The environments a job's trials ran in, with how many trials each."""
    counts = (
        select(Trial.environment_id.label("env"), func.count().label("n"))
        .where(Trial.job_id == job_id)
        .group_by(Trial.environment_id)
        .subquery()
    )
    cols = [
        Environment.host, Environment.cpu_model, Environment.gpu_model, Environment.gpu_driver,
        Environment.cuda_version, Environment.tvm_version, Environment.torch_version,
        Environment.python_version,
    ]  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(
            select(counts.c.n.label("trials"), *cols)
            .select_from(counts.outerjoin(Environment, Environment.id == counts.c.env))
            .order_by(counts.c.n.desc())
        ).all()
    return [dict(r._mapping) for r in rows]


def common_errors(engine: Engine, job_id: int, limit: int = 5) -> list[dict[str, Any]]:
    """The most frequent (status, error text) pairs among a job's failed trials."""
    text = func.substr(Trial.error, 1, 300)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Trial.status, text.label("error"), func.count().label("trials"))
            .where(Trial.job_id == job_id, Trial.status != OK, Trial.error.is_not(None))
            .group_by(Trial.status, text)
            .order_by(func.count().desc())
            .limit(limit)
        ).all()
    return [dict(r._mapping) for r in rows]
