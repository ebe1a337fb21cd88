"""Best-so-far curves: a job's best latency against its number of trials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, and_, case, func, select

from tunelab.dashboard.queries.common import OK
from tunelab.schema.models import Trial, trial_baseline


@dataclass(frozen=True)
class CurvePoint:
    """The best ok latency of a job after its `n`-th trial (1-based, all statuses count)."""

    job_id: int
    n: int
    best_s: float


def best_so_far(engine: Engine, job_ids: Sequence[int]) -> dict[int, list[CurvePoint]]:
    """Best-so-far latency against trial number, per job: only the trials that set a new
    best, plus each job's last trial (a step curve; a few dozen points per job).

    One window pass (trial number and running minimum share a window ordered by id).
    Baseline trials (`extra.baseline`) count as trials but not as search results.
    """
    if not job_ids:
        return {}
    searched = and_(Trial.status == OK, trial_baseline().is_(None))
    lat = case((searched, Trial.latency_median_s))
    win = {"partition_by": Trial.job_id, "order_by": Trial.id}
    running = (
        select(
            Trial.job_id.label("job_id"),
            func.row_number().over(**win).label("n"),
            lat.label("lat"),
            func.min(lat).over(**win, rows=(None, 0)).label("best"),
        )
        .where(Trial.job_id.in_(list(job_ids)))
        .subquery()
    )
    stmt = (
        select(running.c.job_id, running.c.n, running.c.best)
        .where(running.c.lat == running.c.best)  # this trial set (or equalled) the best
        .order_by(running.c.job_id, running.c.n)
    )
    totals = (
        select(Trial.job_id, func.count())
        .where(Trial.job_id.in_(list(job_ids)))
        .group_by(Trial.job_id)
    )
    out: dict[int, list[CurvePoint]] = {j: [] for j in job_ids}
    with engine.connect() as conn:
        for job_id, n, best in conn.execute(stmt):
            points = out[job_id]
            if not points or best < points[-1].best_s:
                points.append(CurvePoint(job_id, n, best))
        for job_id, total in conn.execute(totals):
            points = out[job_id]
            if points and points[-1].n < total:
                points.append(CurvePoint(job_id, total, points[-1].best_s))
    return out


def trials_to_reach(curve: Sequence[CurvePoint], fraction: float = 0.99) -> int | None:
    """Trials a job needed before its best reached `fraction` of its final best
    performance (latency <= final best / fraction); None without any ok trial."""
    if not curve:
        return None
    final = min(p.best_s for p in curve)
    for p in curve:
        if p.best_s <= final / fraction:
            return p.n
    return None  # pragma: no cover - the final point always qualifies
