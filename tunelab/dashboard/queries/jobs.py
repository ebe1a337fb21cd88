"""Jobs as the Jobs and Job pages show them: the list, one job, its trials' statuses,
environments and most frequent errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, func, select

from tunelab.dashboard.queries.common import OK, aware
from tunelab.dashboard.queries.trials import baseline_trials
from tunelab.platform import jobs as platform_jobs
from tunelab.platform.noise import RESAMPLES, decide
from tunelab.schema.models import Environment, Job, Trial, Workload

LIVE = ("pending", "running")


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
    best_trial_id: int | None = None
    busy_trials: int = 0  # trials measured on a busy node (platform/health.py)
    busy_rounds: int = 0  # final rounds measured on a busy node

    @property
    def label(self) -> str:
        return f"{self.id}: {self.name} ({self.strategy})"

    @property
    def trials_text(self) -> str:
        """`done/planned`, or just `done` for a job that never said what it planned
        (replays recorded before they did, jobs loaded by hand: not `648/0`)."""
        return f"{self.n_done}/{self.n_planned}" if self.n_planned > 0 else str(self.n_done)

    @property
    def progress(self) -> float:
        """Fraction done, 0-1 (1 for a finished job without a plan)."""
        if self.n_planned > 0:
            return min(1.0, self.n_done / self.n_planned)
        return 1.0 if self.n_done and self.status not in LIVE else 0.0


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
            Job.best_trial_id,
            Job.busy_trials,
            Job.busy_rounds,
            best.c.params.label("best_params"),
            Job.created_at,
            Job.error,
            Job.heartbeat_at,
            Job.started_at,
            Job.driver_host,
            Job.driver_pid,
        )
        .join(Workload, Workload.id == Job.workload_id)
        .outerjoin(best, best.c.id == Job.best_trial_id)
    )


def _job_row(r: Any, now: datetime) -> JobRow:
    # The row has the Job columns display_status reads (status, the heartbeat, start and
    # creation times, the driver's host and pid), under their names.
    return JobRow(
        id=r.id, name=r.name, kind=r.kind, target=r.target, status=platform_jobs.display_status(r),
        workload=r.workload, strategy=r.strategy or "-", n_planned=r.n_planned,
        n_done=r.n_done, n_ok=r.n_ok, n_failed=r.n_failed, best_latency_s=r.best_latency_s,
        best_params=r.best_params, created_at=aware(r.created_at) or now, error=r.error,
        objective=r.objective, direction=r.direction, best_value=r.best_value,
        best_trial_id=r.best_trial_id, busy_trials=r.busy_trials or 0,
        busy_rounds=r.busy_rounds or 0,
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


@dataclass(frozen=True)
class BaselineComparison:
    """A library baseline against the job's best: `ratio` = baseline median / best
    median (above 1: the best found is faster), with its 95% bootstrap interval
    (`noise.decide`'s, the verdict's own definition) when both kept repeats."""

    name: str
    trial_id: int
    median_s: float
    best_s: float
    ratio: float
    ci: tuple[float, float] | None
    outcome: str  # win, loss, undecided (the interval), or "" without one
    source: str  # what the numbers come from, in words


CI_TEXT = (
    f"95% bootstrap interval of the ratio of medians ({RESAMPLES:,} resamples of each "
    "side's repeats)"
)


def baselines(engine: Engine, job_id: int) -> list[BaselineComparison]:
    """Each ok library baseline of a timed job against its best: from the final rounds'
    verdict when the job had them (interleaved re-measurements), else from the search's
    own repeats of the best trial and the baseline, judged by `noise.decide`."""
    with engine.connect() as conn:
        job = conn.execute(
            select(Job.best_trial_id, Job.verdict, Job.objective).where(Job.id == job_id)
        ).first()
        if job is None or job.best_trial_id is None or not job.objective.endswith("_s"):
            return []
        rows = conn.execute(
            baseline_trials(conn, job_id, Trial.latency_median_s, Trial.latencies_s)
        ).all()
        if not rows:
            return []
        best = conn.execute(
            select(Trial.latency_median_s, Trial.latencies_s).where(Trial.id == job.best_trial_id)
        ).first()
    judged = {b["key"]: b for b in (job.verdict or {}).get("baselines", [])}
    out: list[BaselineComparison] = []
    searched: dict[str, list[float]] = {}
    for r in rows:
        if r.baseline in judged:
            b = judged[r.baseline]
            out.append(BaselineComparison(
                r.baseline, r.id, b["median_s"], job.verdict["winner_median_s"], b["ratio"],
                tuple(b["ci"]), b["outcome"],
                f"final rounds: {job.verdict['rounds']} rounds of interleaved re-measurements",
            ))  # fmt: skip
        elif r.baseline not in searched:
            searched[r.baseline] = list(r.latencies_s or []) or [r.latency_median_s]
    if not searched or best is None or best.latency_median_s is None:
        return out
    best_repeats = list(best.latencies_s or []) or [best.latency_median_s]
    verdict = decide({"best": best_repeats}, searched, rounds=0)
    ids = {r.baseline: r.id for r in rows}
    for c in verdict.baselines:
        interval = len(best_repeats) > 1 and len(searched[c.key]) > 1
        out.append(BaselineComparison(
            c.key, ids[c.key], c.median_s, verdict.winner_median_s, c.ratio,
            c.ci if interval else None, c.outcome if interval else "",
            f"search: {len(searched[c.key])} repeats of the baseline, "
            f"{len(best_repeats)} of the best" if interval
            else "search: a single measurement on one side, no interval",
        ))  # fmt: skip
    return sorted(out, key=lambda b: b.name)


@dataclass(frozen=True)
class FinalBest:
    """A job's best as its final rounds decided it: the winner (`trial_id`; None when
    the reference itself won), the job's best value from those rounds, how many rounds,
    and the winner's own value as the search measured it (what the best-so-far curve
    shows for that trial)."""

    trial_id: int | None
    value: float
    rounds: int
    search_value: float | None
    # Final rounds against a reference (a speedup): the winner's 95% interval, its
    # verdict against the reference, and what the reference is.
    ci: tuple[float, float] | None = None
    outcome: str | None = None
    against: str | None = None


def final_best(engine: Engine, job_id: int) -> FinalBest | None:
    """The final rounds' best of a job, or None when the job had none (its best is then
    the search's own, the best-so-far curve's last value)."""
    with engine.connect() as conn:
        job = conn.execute(
            select(Job.verdict, Job.best_value, Job.best_trial_id).where(Job.id == job_id)
        ).first()
        if job is None or not job.verdict or job.best_value is None:
            return None
        searched = None
        if job.best_trial_id is not None:
            searched = conn.execute(
                select(Trial.value).where(Trial.id == job.best_trial_id)
            ).scalar()
    won = job.verdict.get("best") or {}
    return FinalBest(job.best_trial_id, job.best_value, int(job.verdict.get("rounds") or 0),
                     searched, tuple(won["ci"]) if won.get("ci") else None, won.get("outcome"),
                     (job.verdict.get("reference") or {}).get("label"))  # fmt: skip


def busy_text(engine: Engine, job: JobRow) -> str | None:
    """What a job's busy-node mark says (platform/health.py), or None if it has none."""
    if not (job.busy_trials or job.busy_rounds):
        return None
    r = platform_jobs.busy_report(engine, job.id)
    parts = [f"{job.busy_trials} of {job.n_done} trials"]
    if job.busy_rounds:
        parts.append(f"{job.busy_rounds} final round{'s' if job.busy_rounds > 1 else ''}")
    seen = []
    if r["load1"] is not None:
        seen.append(f"load {r['load1']:.2f}")
    if r["others"] is not None:
        seen.append(f"{r['others']:.1f} runnable tasks not ours on {r['cores']} cores")
    return (
        f"Measured on a busy node: {', '.join(parts)}"
        + (f" ({', '.join(seen)}, at worst)" if seen else "")
        + ". Their numbers are kept from every cache (op costs, calibration, warm starts); "
        "measure again on a quiet node to trust them."
    )
