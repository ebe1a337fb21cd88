"""Best-so-far curves: a job's best value of its primary objective (latency for timing
kinds), in the objective's direction, against its number of trials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, and_, case, func, select

from tunelab.dashboard.queries.common import OK
from tunelab.schema.models import Direction, Job, Trial, trial_baseline


@dataclass(frozen=True)
class CurvePoint:
    """A job's best ok value after its `n`-th trial (1-based, all statuses count)."""

    job_id: int
    n: int
    best: float
    maximize: bool = False


def best_so_far(engine: Engine, job_ids: Sequence[int]) -> dict[int, list[CurvePoint]]:
    """Best-so-far value against trial number, per job: only the trials that set a new
    best, plus each job's last trial (a step curve; a few dozen points per job).

    One window pass (trial number and running best share a window ordered by id; a
    maximised objective is negated so that its best is the running minimum). Baseline
    trials count as trials but not as search results.
    """
    if not job_ids:
        return {}
    searched = and_(Trial.status == OK, trial_baseline().is_(None))
    sign = case((Job.direction == Direction.maximize, -1.0), else_=1.0)
    cost = case((searched, sign * Trial.value))
    win = {"partition_by": Trial.job_id, "order_by": Trial.id}
    running = (
        select(
            Trial.job_id.label("job_id"),
            func.row_number().over(**win).label("n"),
            cost.label("cost"),
            func.min(cost).over(**win, rows=(None, 0)).label("best"),
            sign.label("sign"),
        )
        .join(Job, Job.id == Trial.job_id)
        .where(Trial.job_id.in_(list(job_ids)))
        .subquery()
    )
    stmt = (
        select(running.c.job_id, running.c.n, running.c.best, running.c.sign)
        .where(running.c.cost == running.c.best)  # this trial set (or equalled) the best
        .order_by(running.c.job_id, running.c.n)
    )
    totals = (
        select(Trial.job_id, func.count())
        .where(Trial.job_id.in_(list(job_ids)))
        .group_by(Trial.job_id)
    )
    out: dict[int, list[CurvePoint]] = {j: [] for j in job_ids}
    with engine.connect() as conn:
        for job_id, n, best, sign in conn.execute(stmt):
            points = out[job_id]
            value = sign * best
            if not points or sign * value < sign * points[-1].best:
                points.append(CurvePoint(job_id, n, value, sign < 0))
        for job_id, total in conn.execute(totals):
            points = out[job_id]
            if points and points[-1].n < total:
                last = points[-1]
                points.append(CurvePoint(job_id, total, last.best, last.maximize))
    return out


def trials_to_reach(curve: Sequence[CurvePoint], fraction: float = 0.99) -> int | None:
    """Trials a job needed before its best reached `fraction` of its final best
    performance (a cost <= final best / fraction; a maximised value >= final best *
    fraction); None without any ok trial."""
    if not curve:
        return None
    final = curve[-1].best
    for p in curve:
        reached = p.best >= final * fraction if p.maximize else p.best <= final / fraction
        if reached:
            return p.n
    return None  # pragma: no cover - the final point always qualifies
