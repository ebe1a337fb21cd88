"""Best-so-far curves: a job's best value of its primary objective (latency for timing
kinds), in the objective's direction, against its number of trials; the best known value
a curve is measured against, and the trials it needed to come within 1% of it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from sqlalchemy import Engine, and_, case, func, select

from tunelab.dashboard.queries.common import OK
from tunelab.platform.objectives import best_first, better, rankable
from tunelab.schema.models import Direction, Environment, Job, Trial, trial_baseline


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


def _threshold(reference: float, maximize: bool, fraction: float) -> float:
    """The value a trial must reach (a cost at most, a maximised value at least) to come
    within `fraction` of `reference`: a cost at most reference / fraction (a latency at
    99% of the reference's speed), a positive maximised value at least reference *
    fraction; for a reference at or below zero (a reward), within (1 - fraction) *
    |reference| of it."""
    if reference > 0:
        return reference * fraction if maximize else reference / fraction
    slack = (1 - fraction) * abs(reference)
    return reference - slack if maximize else reference + slack


def _reached(value: float, reference: float, maximize: bool, fraction: float) -> bool:
    target = _threshold(reference, maximize, fraction)
    return value >= target if maximize else value <= target


def trials_to_reach(
    curve: Sequence[CurvePoint], reference: float | None = None, *, fraction: float = 0.99
) -> int | None:
    """The trial number at which a job's best-so-far first came within `fraction` of
    `reference` (see `_threshold`); by default its own final best. None without any ok
    trial, or when it never came that close (a better job's best as reference)."""
    if not curve:
        return None
    target = curve[-1].best if reference is None else reference
    for p in curve:
        if _reached(p.best, target, p.maximize, fraction):
            return p.n
    return None


def reach_trial(
    engine: Engine, job_id: int, reference: float | None, *, fraction: float = 0.99
) -> int | None:
    """`trials_to_reach(best_so_far(...)[job_id], reference)` without the curve: the first
    searched ok trial (by id) within `fraction` of `reference` (an index walk of (job,
    status, value) near the best), then its trial number (trials of any status up to it).
    None when no trial came that close, or without a reference."""
    if reference is None:
        return None
    with engine.connect() as conn:
        direction = conn.execute(select(Job.direction).where(Job.id == job_id)).scalar()
        if direction is None:
            return None
        maximize = direction == Direction.maximize
        target = _threshold(reference, maximize, fraction)
        close = Trial.value >= target if maximize else Trial.value <= target
        first = conn.execute(
            select(func.min(Trial.id)).where(Trial.job_id == job_id, rankable(), close)
        ).scalar()
        if first is None:
            return None
        return conn.execute(
            select(func.count()).where(Trial.job_id == job_id, Trial.id <= first)
        ).scalar_one()


def share_of(value: float | None, reference: float | None, maximize: bool) -> float | None:
    """How close `value` comes to `reference` as a fraction of its performance: reference /
    value for a cost, value / reference for a maximised value (1.0 = as good); None
    unless both are positive."""
    if value is None or reference is None or value <= 0 or reference <= 0:
        return None
    return value / reference if maximize else reference / value


@dataclass(frozen=True)
class Reference:
    """The best known value a job's search is measured against, and where it comes from.

    `job_id` is the job that holds it (the job itself when `own`); `device` is what its
    best trial ran on (a GPU or CPU model, or the sweep a replay answered from); `label`
    says all of it in words, for a caption. `own_value` is the job's own best."""

    value: float | None
    job_id: int | None
    own: bool
    device: str | None
    label: str
    own_value: float | None = None
    maximize: bool = False


# Other jobs a reference is looked for among (the newest of the same workload).
MAX_PEERS = 200
_JOB_REF = re.compile(r"^job (\d+)$")


def _device_key(target: str, row: Any) -> tuple[str, str] | None:
    """What a best trial ran on: the GPU model for a CUDA target, else the CPU model; for
    a replay (no environment), the sweep it answered from. None when not recorded."""
    gpu = target.split(":", 1)[0] == "cuda"
    model = (row.gpu_model if gpu else row.cpu_model) or None
    if model:
        return ("device", model)
    source = row.replayed_from
    if source:
        ref = _JOB_REF.match(source)
        return ("job", ref.group(1)) if ref else ("sweep", PurePath(source).name)
    return None


def _device_text(key: tuple[str, str] | None) -> str | None:
    if key is None:
        return None
    kind, name = key
    return {"device": name, "job": f"replayed from job {name}",
            "sweep": f"replayed from {name}"}[kind]  # fmt: skip


def best_reference(engine: Engine, job_id: int) -> Reference:
    """The best known value for a job's workload: the best ok, non-baseline trial among
    the jobs of the same workload, target label and objective (direction included) whose
    best ran on the same device as this job's best (a faster result on another machine
    is not comparable), else the job's own best. Replays, which record no environment,
    compare by the sweep they replayed (a replay of job N counts as job N's device).

    Cheap at any scale: the jobs table, then per job one index walk of (job, status,
    value) to its best trial."""
    with engine.connect() as conn:
        me = conn.execute(
            select(Job.workload_id, Job.target, Job.objective, Job.direction).where(
                Job.id == job_id
            )
        ).first()
        if me is None:
            return Reference(None, None, True, None, "no such job")
        maximize = me.direction == Direction.maximize
        best_trial = (
            select(Trial.id)
            .where(Trial.job_id == Job.id, rankable())
            .order_by(*best_first(me.direction))
            .limit(1)
            .correlate(Job)
            .scalar_subquery()
        )
        cols = (
            Job.id,
            Job.spec[("search", "strategy")].as_string().label("strategy"),
            Job.n_done,
            best_trial.label("best_trial"),
        )
        peers = conn.execute(
            select(*cols)
            .where(
                Job.workload_id == me.workload_id,
                Job.target == me.target,
                Job.objective == me.objective,
                Job.direction == me.direction,
            )
            .order_by(Job.id.desc())
            .limit(MAX_PEERS)
        ).all()
        if not any(p.id == job_id for p in peers):  # beyond the newest MAX_PEERS
            peers.append(conn.execute(select(*cols).where(Job.id == job_id)).one())
        trial_ids = [p.best_trial for p in peers if p.best_trial is not None]
        bests = {
            r.job_id: r
            for r in conn.execute(
                select(
                    Trial.job_id,
                    Trial.value,
                    Environment.cpu_model,
                    Environment.gpu_model,
                    Trial.extra["replayed_from"].as_string().label("replayed_from"),
                )
                .outerjoin(Environment, Environment.id == Trial.environment_id)
                .where(Trial.id.in_(trial_ids))
            )
        }
    keys = {j: _device_key(me.target, r) for j, r in bests.items()}
    for j, key in keys.items():  # a replay of job N ran where job N's best ran
        if key is not None and key[0] == "job" and int(key[1]) in keys:
            keys[j] = keys[int(key[1])] or key
    by_id = {p.id: p for p in peers}
    mine = bests.get(job_id)
    if mine is None:
        return Reference(None, None, True, None, "this job has no ok trial yet", None, maximize)
    my_key = keys[job_id]
    device = _device_text(my_key)
    if my_key is None:
        return Reference(
            mine.value, job_id, True, None,
            "this job's own best: where its trials ran is not recorded, so no other job "
            "compares", mine.value, maximize,
        )  # fmt: skip
    comparable = [j for j in bests if j != job_id and keys[j] == my_key]
    best_job = job_id
    for j in sorted(comparable):  # ties: the job itself, then the oldest
        if better(bests[j].value, bests[best_job].value, me.direction):
            best_job = j
    where = f"{me.target} · {device}"
    if best_job == job_id:
        why = (
            f"the best of {len(comparable) + 1} jobs of this workload on {where}"
            if comparable
            else f"no other job of this workload on {where}"
        )
        label = f"this job's own best: {why}"
        return Reference(mine.value, job_id, True, device, label, mine.value, maximize)
    peer = by_id[best_job]
    return Reference(
        bests[best_job].value, best_job, False, device,
        f"job {best_job}'s best ({peer.strategy or '-'}, {peer.n_done:,} trials): the best "
        f"known for this workload on {where}", mine.value, maximize,
    )  # fmt: skip


def best_known(engine: Engine, job: Any) -> tuple[float | None, str]:
    """(value, where it comes from) of `best_reference` for a job (an id or a JobRow):
    what the Job page measures "trials to 99% of best" against, with
    `trials_to_reach(curve, value)`."""
    ref = best_reference(engine, job if isinstance(job, int) else job.id)
    return ref.value, ref.label
