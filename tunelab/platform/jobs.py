"""Jobs in the database: create, claim for a driver, cancel, list, and read trials back."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, case, func, select, update
from sqlalchemy.orm import selectinload

from tunelab.platform.objectives import best_first, rankable
from tunelab.schema.db import session_scope
from tunelab.schema.models import (
    Environment,
    Job,
    JobStatus,
    Trial,
    TrialStatus,
    Workload,
    trial_baseline,
)

if TYPE_CHECKING:  # kinds and specs are loaded by what creates jobs, not what reads them
    from tunelab.platform.spec import JobSpec

# A running job whose driver runs on another host and has not beaten for this long is
# taken to have lost it (a driver on this host is judged by its process). Its heartbeat
# thread beats every few seconds (execution/liveness.py); the window is sized for a
# loaded machine and a database that blinked.
ENV_STALE_AFTER_S = "TUNELAB_STALE_AFTER_S"
DEFAULT_STALE_AFTER_S = 120.0
# Clock slack when comparing a process's start with the last heartbeat of a driver.
PID_SLACK_S = 1.0


class JobNotFound(LookupError):
    pass


class JobStateError(RuntimeError):
    """The job is in a state that does not allow the requested action."""


class LostOwnership(JobStateError):
    """Another driver took the job over (`resume --force`): this one must stop."""


def insert_ignore(engine: Engine, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the engine's dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def _workload_id(engine: Engine, spec: JobSpec) -> int:
    from tunelab.platform.kinds import get_kind, workload_hash

    kind = get_kind(spec.kind)
    digest = workload_hash(spec.kind, spec.workload)
    row = {
        "hash": digest,
        "kind": spec.kind,
        "description": kind.describe(spec.workload)[:255],
        "definition": spec.workload,
        "created_at": datetime.now(UTC),
    }
    with engine.begin() as conn:
        conn.execute(insert_ignore(engine, Workload.__table__).values(**row))
        return conn.execute(select(Workload.id).where(Workload.hash == digest)).scalar_one()


def create_job(engine: Engine, spec: JobSpec) -> int:
    """Record a validated spec as a pending job; returns its id."""
    from tunelab.platform.kinds import get_kind

    workload_id = _workload_id(engine, spec)
    with session_scope(engine) as s:
        kind = get_kind(spec.kind)
        job = Job(
            name=spec.name,
            kind=spec.kind,
            spec=spec.model_dump(mode="json"),
            workload_id=workload_id,
            target=kind.describe_target(spec)[:128],
            objective=kind.primary().name,
            direction=kind.primary().direction,
            status=JobStatus.pending,
            n_planned=0,
            n_done=0,
            n_ok=0,
            n_failed=0,
        )
        s.add(job)
        s.flush()
        return job.id


def get_job(engine: Engine, job_id: int) -> Job:
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        _ = job.workload  # load before the session closes
        return job


def stale_after() -> timedelta:
    """How long a driver on another host may go without a heartbeat: TUNELAB_STALE_AFTER_S,
    else 2 minutes."""
    raw = os.environ.get(ENV_STALE_AFTER_S, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_STALE_AFTER_S
    except ValueError:
        seconds = DEFAULT_STALE_AFTER_S
    return timedelta(seconds=seconds if seconds > 0 else DEFAULT_STALE_AFTER_S)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # SQLite: naive, in UTC


def last_beat(job: Job) -> datetime:
    """When the job's driver last said it was alive (its claim counts)."""
    return _aware(job.heartbeat_at or job.started_at or job.created_at)


def driver_alive(job: Job) -> bool | None:
    """Whether the job's driver process still runs, when it ran on this host; None when it
    ran on another host (or no pid was recorded): only its heartbeat can tell then.

    A pid the system gave to a new process after the driver died is no driver: a process
    started after the driver's last heartbeat (which the driver wrote while it lived)
    cannot be it. A zombie is no driver either."""
    host, pid = getattr(job, "driver_host", None), getattr(job, "driver_pid", None)
    if host != socket.gethostname() or not pid:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists, its start unknown
        return True
    return started <= last_beat(job).timestamp() + PID_SLACK_S


def is_stale(job: Job, now: datetime | None = None) -> bool:
    """A running job whose driver is gone: on this host, its process no longer exists
    (while it does, never, however long it has been silent); on another, it has not
    beaten for `stale_after()`. Such a job can be resumed without --force."""
    if job.status != JobStatus.running:
        return False
    alive = driver_alive(job)
    if alive is not None:
        return not alive
    return (now or datetime.now(UTC)) - last_beat(job) > stale_after()


def beat(engine: Engine, job_id: int, lease: int) -> bool:
    """Write a driver's heartbeat; False when the job is no longer held under `lease`."""
    stmt = update(Job).where(Job.id == job_id, Job.lease == lease)
    with engine.begin() as conn:
        return conn.execute(stmt.values(heartbeat_at=datetime.now(UTC))).rowcount > 0


WAITING = "waiting for resources"  # as execution/pool.py notes it


def display_status(job: Job) -> str:
    """The status as shown: a lost driver's and a queued job's (`waiting for resources`,
    what for in `error` while it runs) said so."""
    if is_stale(job):
        return "running (driver lost)"
    if job.status == JobStatus.running and (job.error or "").startswith(WAITING):
        return WAITING
    return job.status


def note_waiting(engine: Engine, job_id: int, lease: int, note: str | None) -> bool:
    """Record what a running job waits for (None: nothing now), with a heartbeat: a queued
    job is not one whose driver is lost. False when the job is no longer this driver's to
    run (cancelled, taken over)."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.lease == lease, Job.status == JobStatus.running)
        .values(error=note, heartbeat_at=datetime.now(UTC))
    )
    with engine.begin() as conn:
        return bool(conn.execute(stmt).rowcount)


def check_resumable(
    job: Job, *, force: bool = False, now: datetime | None = None, retry_failed: bool = False
) -> None:
    """Raise JobStateError for a completed job (unless `retry_failed`: its lost and timed
    out trials run again) and for one that another live driver runs (see `is_stale`)
    unless `force`. A cancelled job can be resumed: a cancel is a pause."""
    if job.status == JobStatus.completed and not retry_failed:
        raise JobStateError(
            f"job {job.id} is completed; nothing to run (--retry-failed runs its lost and "
            "timed-out trials again)"
        )
    if job.status == JobStatus.running and not is_stale(job, now) and not force:
        seen = f"last heartbeat {last_beat(job).astimezone():%H:%M:%S}"
        if driver_alive(job):
            seen = f"its process is alive, {seen}"
        raise JobStateError(
            f"job {job.id} is running under {job.driver_host} pid {job.driver_pid} ({seen}); "
            "use --force to take it over (that driver records what it measured and stops)"
        )


def claim(engine: Engine, job_id: int, *, force: bool = False, retry_failed: bool = False) -> Job:
    """Mark a job running under this process, if `check_resumable` allows, with a new
    lease: a driver that held the job before is refused its next write and stops."""
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        check_resumable(job, force=force, now=now, retry_failed=retry_failed)
        job.lease = (job.lease or 0) + 1
        if retry_failed:
            job.verdict = None  # new trials: the final round is run again
        job.status = JobStatus.running
        job.driver_host = socket.gethostname()
        job.driver_pid = os.getpid()
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.finished_at = None
        job.error = None
        return job


def finish(
    engine: Engine,
    job_id: int,
    status: JobStatus,
    error: str | None = None,
    *,
    lease: int | None = None,
) -> None:
    """Record how a driver's run of a job ended (a cancel recorded meanwhile stays; with
    `lease`, only while the job is still this driver's)."""
    stmt = update(Job).where(Job.id == job_id, Job.status != JobStatus.cancelled)
    if lease is not None:
        stmt = stmt.where(Job.lease == lease)
    with engine.begin() as conn:
        conn.execute(stmt.values(status=status, error=error, finished_at=datetime.now(UTC)))


def cancel(engine: Engine, job_id: int) -> str:
    """Ask a job to stop. A running driver sees it within a second or two and stops."""
    with session_scope(engine) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        if job.status in (JobStatus.completed, JobStatus.cancelled):
            raise JobStateError(f"job {job_id} is already {job.status}")
        job.status = JobStatus.cancelled
        job.finished_at = datetime.now(UTC)
        return job.status


def status_and_lease(engine: Engine, job_id: int) -> tuple[str, int]:
    """A job's status and the lease of the driver that holds it."""
    with engine.connect() as conn:
        status, lease = conn.execute(select(Job.status, Job.lease).where(Job.id == job_id)).one()
        return status, lease


def status_of(engine: Engine, job_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(Job.status).where(Job.id == job_id)).scalar_one()


def list_jobs(
    engine: Engine, *, limit: int = 50, kind: str | None = None, status: str | None = None
) -> list[Job]:
    stmt = select(Job).options(selectinload(Job.workload)).order_by(Job.id.desc()).limit(limit)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if status:
        stmt = stmt.where(Job.status == status)
    with session_scope(engine) as s:
        return list(s.scalars(stmt))


RETRYABLE = (TrialStatus.worker_lost, TrialStatus.timeout)


def recorded(
    engine: Engine, job_id: int, *, retry_failed: bool = False
) -> list[tuple[str, float | None, dict[str, Any]]]:
    """(candidate, value or None, params) of every final trial of a job, in order: what a
    resumed driver skips and its strategy learns from (the value only of `ok` trials).
    `running` trials are not done: they run again; so do lost and timed-out ones with
    `retry_failed`."""
    ok = case((Trial.status == TrialStatus.ok, Trial.value), else_=None)
    skip = [TrialStatus.running, *(RETRYABLE if retry_failed else ())]
    stmt = (
        select(Trial.candidate, ok, Trial.params)
        .where(Trial.job_id == job_id, Trial.status.not_in(skip))
        .order_by(Trial.id)
    )
    with engine.connect() as conn:
        return [(key, value, params) for key, value, params in conn.execute(stmt)]


def retryable(engine: Engine, job_id: int) -> list[tuple[str, dict[str, Any], str | None]]:
    """(candidate, params, error) of a job's lost and timed-out trials."""
    stmt = (
        select(Trial.candidate, Trial.params, Trial.error)
        .where(Trial.job_id == job_id, Trial.status.in_(RETRYABLE))
        .order_by(Trial.id)
    )
    with engine.connect() as conn:
        return [(k, p, e) for k, p, e in conn.execute(stmt)]


def status_counts(engine: Engine, job_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Trial.status, func.count()).where(Trial.job_id == job_id).group_by(Trial.status)
        )
        return {status: n for status, n in rows}


def trials(
    engine: Engine,
    job_id: int,
    *,
    top: int | None = None,
    status: str | None = None,
    offset: int = 0,
) -> list[Trial]:
    """A job's trials: with `top`, the best correct searched ones by the job's primary
    objective (library baselines left out); else all in recording order."""
    stmt = select(Trial).where(Trial.job_id == job_id)
    if top is not None:
        with engine.connect() as conn:
            direction = conn.execute(select(Job.direction).where(Job.id == job_id)).scalar()
        stmt = stmt.where(rankable()).order_by(*best_first(direction or "minimize")).limit(top)
    else:
        stmt = stmt.order_by(Trial.id)
    if status is not None:
        stmt = stmt.where(Trial.status == status)
    if offset:
        stmt = stmt.offset(offset)
    with session_scope(engine) as s:
        return list(s.scalars(stmt))


def baseline_trials(engine: Engine, job_id: int) -> list[Trial]:
    """A job's library-baseline trials (`extra.baseline`)."""
    stmt = select(Trial).where(Trial.job_id == job_id, trial_baseline().is_not(None))
    with session_scope(engine) as s:
        return list(s.scalars(stmt.order_by(Trial.id)))


def environment(engine: Engine, environment_id: int) -> Environment | None:
    with session_scope(engine) as s:
        return s.get(Environment, environment_id)


def busy_report(engine: Engine, job_id: int, trial_ids: Iterable[int] = ()) -> dict[str, Any]:
    """What of a job was measured on a busy node (platform/health.py): the worst its busy
    trials and final rounds saw (`load1`, `others`: runnable tasks not ours, `cores`), and
    which of `trial_ids` were measured busy (`marked`: id -> `trial`, `final rounds` or
    `trial, final rounds`)."""
    from tunelab.platform.recorder import measured_busy
    from tunelab.schema.models import Remeasurement

    ids = list(trial_ids)
    with engine.connect() as conn:
        trials = conn.execute(
            select(Trial.id, Trial.node_health).where(
                Trial.job_id == job_id, measured_busy(Trial.node_health)
            )
        ).all()
        rounds = conn.execute(
            select(Remeasurement.trial_id, Remeasurement.node_health).where(
                Remeasurement.job_id == job_id, measured_busy(Remeasurement.node_health)
            )
        ).all()
    records = [h for _, h in (*trials, *rounds) if h]

    def worst(key: str) -> Any:
        return max((r[key] for r in records if r.get(key) is not None), default=None)

    marked: dict[int, str] = {}
    for tid in ids:
        where = [w for w, rows in (("trial", trials), ("final rounds", rounds))
                 if any(r[0] == tid for r in rows)]  # fmt: skip
        if where:
            marked[tid] = ", ".join(where)
    return {"load1": worst("load1"), "others": worst("others"), "cores": worst("cores"),
            "marked": marked}  # fmt: skip
