"""History and parameters: every trial's value against its number (sampled evenly in SQL
for large jobs), the exact best-so-far curve, and a sample of (parameters, value) for
importance, parallel coordinates and slice plots.

Large jobs are sampled by id: the job's ids are cut into buckets of `width` consecutive
ids (width = the job's trial count / `limit`), and one GROUP BY returns each bucket's first
trial and its count (on SQLite from the (job, status, value) index alone, which holds the
id). A bucket's first trial has a known number (one plus the counts of the buckets before
it), so the sample's trial numbers are exact with no window over the whole job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func, select

from tunelab.dashboard.queries.common import OK, aware
from tunelab.dashboard.queries.curves import CurvePoint
from tunelab.schema.models import Direction, Job, Trial

HISTORY_LIMIT = 4000  # trials plotted per job, about
PARAM_LIMIT = 3000  # trials sampled per job for importance and the parameter plots
IN_CHUNK = 900  # ids per IN (...) list: below SQLite's oldest bound-parameter limit


@dataclass(frozen=True)
class HistoryPoint:
    """One ok trial with a value: its number in the job (1-based, every status counts),
    seconds from the job's first trial's start to its end, and the range of its timed
    repeats (`latencies_s`) when it records them."""

    n: int
    value: float
    elapsed_s: float | None = None
    low: float | None = None
    high: float | None = None
    baseline: str | None = None
    sampled: bool = True  # False: shown because it set a new best, between sample points


@dataclass
class History:
    """A job's history: sampled trials, its exact best-so-far curve and its counts."""

    job_id: int
    n_trials: int  # every trial, any status
    n_ok: int  # ok trials, as the job records them
    n_sampled: int = 0  # trials in the sample (ok or not): all of them, or one per bucket
    maximize: bool = False
    points: list[HistoryPoint] = field(default_factory=list)
    best: list[CurvePoint] = field(default_factory=list)  # as queries.best_so_far
    started_at: datetime | None = None

    @property
    def sampled(self) -> bool:
        """Whether `points` is a sample (plus the new bests), not every trial."""
        return self.n_sampled < self.n_trials


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), IN_CHUNK):
        yield list(ids[i : i + IN_CHUNK])


def _job_facts(conn: Any, job_id: int) -> tuple[int, int, bool]:
    """A job's recorded trial and ok counts (the recorder keeps them), and whether its
    objective is maximised."""
    n_done, n_ok, direction = conn.execute(
        select(Job.n_done, Job.n_ok, Job.direction).where(Job.id == job_id)
    ).one_or_none() or (0, 0, None)
    return n_done or 0, n_ok or 0, direction == Direction.maximize


def _width(n: int, limit: int) -> int:
    """Ids per bucket for about `limit` buckets of `n` trials: exactly that when the job's
    ids are consecutive; more buckets when jobs ran side by side and their ids interleave
    (the sample is then thinned)."""
    return max(1, math.ceil(n / max(1, limit)))


def _spread_evenly(items: Sequence[int], limit: int) -> list[int]:
    """At most about `limit` of `items`, evenly spread, the first kept."""
    k = max(1, len(items) // max(1, limit))
    return list(items[::k])


def _spread(latencies: Any) -> tuple[float | None, float | None]:
    xs = [x for x in latencies or () if isinstance(x, int | float)]
    return (min(xs), max(xs)) if len(xs) > 1 else (None, None)


_POINT_COLUMNS = (
    Trial.id, Trial.status, Trial.value, Trial.baseline, Trial.latencies_s, Trial.started_at,
    Trial.finished_at,
)  # fmt: skip


def _searched_cost(
    status: str, value: float | None, baseline: str | None, sign: float
) -> float | None:
    """What the best so far minimises: the signed value of an ok, searched trial."""
    if status != OK or baseline is not None or value is None:
        return None
    return sign * value


def history(engine: Engine, job_id: int, *, limit: int = HISTORY_LIMIT) -> History:
    """About `limit` trials of a job evenly spread over its recording order (all of them
    when it has fewer), those ok with a value as points, plus every trial that set a new
    best, and the exact best-so-far curve (as queries.best_so_far: ok, non-baseline
    trials, a maximised objective's best the highest).

    The best so far without reading every trial: one GROUP BY gives each bucket's
    minimum cost over its ok trials (baselines included: the index has no baseline
    column); only buckets whose minimum beats every bucket before them can hold a new
    best, and only those are read whole. A bucket whose minimum turns out to be a
    baseline gets its searched minimum instead, and the buckets are checked again, until
    every bucket that can hold a new best has been read.
    """
    with engine.connect() as conn:
        n_done, n_ok, maximize = _job_facts(conn, job_id)
        width = _width(n_done, limit)
        sign = -1.0 if maximize else 1.0
        cost = case((Trial.status == OK, sign * Trial.value))
        buckets = sorted(
            conn.execute(
                select(func.min(Trial.id), func.count(), func.min(cost))
                .where(Trial.job_id == job_id)
                .group_by(Trial.id // width)
            ).all()
        )
        total = sum(b[1] for b in buckets)
        out = History(job_id=job_id, n_trials=total, n_ok=n_ok, maximize=maximize)
        if not total:
            return out
        firsts = [b[0] for b in buckets]
        number: dict[int, int] = {}  # trial id -> its number in the job
        n = 1
        for first, count, _ in buckets:
            number[first] = n
            n += count
        sample = _spread_evenly(firsts, limit)
        rows = {}
        for chunk in _chunks(sample):
            rows.update(
                {
                    r.id: r
                    for r in conn.execute(select(*_POINT_COLUMNS).where(Trial.id.in_(chunk))).all()
                }
            )
        # Buckets that can hold a new best: read them whole (id, status, value, baseline).
        bucket_min = {i: b[2] for i, b in enumerate(buckets)}
        read: dict[int, list[Any]] = {}
        if len(sample) == total:  # every trial is its own bucket and has been read
            read = {i: [rows[f]] for i, f in enumerate(firsts)}
        while True:
            running, hopeful = math.inf, []
            for i in range(len(buckets)):
                m = bucket_min[i]
                if m is not None and m < running:
                    hopeful.append(i)
                    running = m
            todo = [i for i in hopeful if i not in read]
            if not todo:
                break
            for i in todo:
                start = firsts[i] // width * width
                read[i] = conn.execute(
                    select(Trial.id, Trial.status, Trial.value, Trial.baseline)
                    .where(Trial.job_id == job_id, Trial.id >= start, Trial.id < start + width)
                    .order_by(Trial.id)
                ).all()
                costs = [_searched_cost(r.status, r.value, r.baseline, sign) for r in read[i]]
                bucket_min[i] = min((c for c in costs if c is not None), default=None)
        best_ids: list[int] = []
        running = math.inf
        for i in sorted(read):
            for k, r in enumerate(read[i]):
                c = _searched_cost(r.status, r.value, r.baseline, sign)
                if c is not None and c < running:
                    running = c
                    number.setdefault(r.id, number[firsts[i]] + k)
                    best_ids.append(r.id)
        missing = [i for i in best_ids if i not in rows]
        for chunk in _chunks(missing):
            rows.update(
                {
                    r.id: r
                    for r in conn.execute(select(*_POINT_COLUMNS).where(Trial.id.in_(chunk))).all()
                }
            )
    sampled = set(sample)
    out.n_sampled = len(sample)
    first = rows[firsts[0]]
    start_at = aware(first.started_at or first.finished_at)
    out.started_at = start_at
    for tid in sorted(rows):
        r = rows[tid]
        if r.status != OK or r.value is None:
            continue
        end = aware(r.finished_at or r.started_at)
        elapsed = (end - start_at).total_seconds() if end and start_at else None
        low, high = _spread(r.latencies_s)
        out.points.append(
            HistoryPoint(number[tid], r.value, elapsed, low, high, r.baseline, tid in sampled)
        )
    out.best = [CurvePoint(job_id, number[i], rows[i].value, maximize) for i in best_ids]
    if out.best and out.best[-1].n < total:
        last = out.best[-1]
        out.best.append(CurvePoint(job_id, total, last.best, maximize))
    return out


@dataclass
class ParamSample:
    """Searched ok trials of a job as (trial id, parameters, value): about one in every
    `step` of the job's ok trials, evenly spread over its recording order."""

    job_id: int
    n_ok: int  # the job's ok trials (baselines included)
    step: int = 1
    ids: list[int] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)


def param_sample(engine: Engine, job_id: int, *, limit: int = PARAM_LIMIT) -> ParamSample:
    """About `limit` searched (ok, non-baseline, with a value) trials of a job, evenly
    spread over its recording order (the first ok trial of each bucket of ids); all of
    them when there are fewer."""
    with engine.connect() as conn:
        _, n_ok, _ = _job_facts(conn, job_id)
        width = _width(n_ok, limit)
        buckets = conn.execute(
            select(func.min(Trial.id), func.count())
            .where(Trial.job_id == job_id, Trial.status == OK)
            .group_by(Trial.id // width)
        ).all()
        ok = sum(b[1] for b in buckets)
        ids = _spread_evenly(sorted(b[0] for b in buckets), limit)
        rows = []
        for chunk in _chunks(ids):
            rows += conn.execute(
                select(Trial.id, Trial.params, Trial.value).where(
                    Trial.id.in_(chunk), Trial.baseline.is_(None), Trial.value.is_not(None)
                )
            ).all()
    rows.sort(key=lambda r: r.id)
    return ParamSample(
        job_id=job_id,
        n_ok=ok,
        step=max(1, round(ok / len(ids))) if ids else 1,
        ids=[r.id for r in rows],
        params=[r.params or {} for r in rows],
        values=[r.value for r in rows],
    )
