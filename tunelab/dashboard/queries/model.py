"""Model accuracy: how well predicted_cost ranks and estimates the measured latency."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Float, Select, and_, case, cast, func, literal, select

from tunelab.dashboard.queries.common import OK
from tunelab.schema.models import Trial


@dataclass(frozen=True)
class ModelMetrics:
    """How well predicted_cost ranks and estimates measured latency over some trials."""

    label: str
    n: int
    spearman: float | None
    topk_recall: float | None
    mape_pct: float | None
    first_trial: int | None = None
    last_trial: int | None = None


@dataclass
class ModelReport:
    """Metrics over a job's whole run, and per model version (or per window of trials)."""

    overall: ModelMetrics | None
    windows: list[ModelMetrics] = field(default_factory=list)
    by: str = "window"
    sample_step: int = 1  # > 1: rho and windows computed on every sample_step-th trial


def _pearson(n: int, sx: float, sy: float, sxx: float, syy: float, sxy: float) -> float | None:
    vx = n * sxx - sx * sx
    vy = n * syy - sy * sy
    if n < 2 or vx <= 0 or vy <= 0:
        return None
    return (n * sxy - sx * sy) / math.sqrt(vx * vy)


# Above this many predicted trials, Spearman's rho and the per-window metrics are
# computed on an evenly spread sample of about this many (the page says so).
EXACT_LIMIT = 50_000


def _predicted(job_id: int) -> list[Any]:
    return [
        Trial.job_id == job_id,
        Trial.status == OK,
        Trial.predicted_cost.is_not(None),
        Trial.latency_median_s.is_not(None),
    ]


def _metric_stmt(job_id: int, k: int, group: Any, step: int) -> Select[Any]:
    """Per group: n, sums for Pearson's r over average ranks (= Spearman's rho with ties),
    top-k recall and MAPE, over ok trials with both a prediction and a measurement
    (every `step`-th trial by id when step > 1)."""
    pred, meas = Trial.predicted_cost, Trial.latency_median_s
    conds = _predicted(job_id)
    if step > 1:
        conds.append(Trial.id % step == 0)
    base = (
        select(group.label("g"), Trial.id.label("id"), pred.label("pred"), meas.label("meas"))
        .where(*conds)
        .subquery()
    )

    def ranks(col: Any) -> tuple[Any, Any]:
        # Average rank among ties, (1 + #smaller + #smaller-or-equal) / 2, and a position
        # (row_number) for top-k; both over one window so the rows are sorted once.
        w = {"partition_by": base.c.g, "order_by": col}
        n = func.count().over(partition_by=base.c.g)
        avg = (cast(func.rank().over(**w), Float) + func.cume_dist().over(**w) * n) / 2.0
        return avg, func.row_number().over(**w)

    (rp, op), (rm, om) = ranks(base.c.pred), ranks(base.c.meas)
    ranked = select(
        base.c.g, base.c.id, base.c.pred, base.c.meas,
        rp.label("rp"), rm.label("rm"), op.label("op"), om.label("om"),
    ).subquery()  # fmt: skip
    rp, rm = ranked.c.rp, ranked.c.rm
    return (
        select(
            ranked.c.g,
            func.count().label("n"),
            func.sum(rp).label("sum_rp"),
            func.sum(rm).label("sum_rm"),
            func.sum(rp * rp).label("sum_rp2"),
            func.sum(rm * rm).label("sum_rm2"),
            func.sum(rp * rm).label("sum_rprm"),
            func.sum(case((and_(ranked.c.op <= k, ranked.c.om <= k), 1), else_=0)).label("hits"),
            func.avg(func.abs(ranked.c.pred - ranked.c.meas) / ranked.c.meas).label("mape"),
            func.min(ranked.c.id).label("first_id"),
            func.max(ranked.c.id).label("last_id"),
        )
        .group_by(ranked.c.g)
        .order_by(ranked.c.g)
    )


def _metrics(label: str, row: Any, k: int) -> ModelMetrics:
    """A row of `_metric_stmt` as metrics."""
    n = row.n
    return ModelMetrics(
        label=label,
        n=n,
        spearman=_pearson(n, row.sum_rp, row.sum_rm, row.sum_rp2, row.sum_rm2, row.sum_rprm),
        topk_recall=row.hits / min(k, n) if n else None,
        mape_pct=row.mape * 100.0 if row.mape is not None else None,
        first_trial=row.first_id,
        last_trial=row.last_id,
    )


def n_predicted(engine: Engine, job_id: int) -> int:
    """How many ok trials of a job have both a prediction and a measurement."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(*_predicted(job_id))).scalar_one()


def _exact_topk_recall(conn: Any, job_id: int, k: int) -> float | None:
    """Of the k fastest measured trials, the share among the k predicted fastest (two
    LIMIT k queries: the measured side walks the (job, status, latency) index)."""
    conds = _predicted(job_id)
    measured = set(
        conn.execute(
            select(Trial.id).where(*conds).order_by(Trial.latency_median_s, Trial.id).limit(k)
        ).scalars()
    )
    predicted = set(
        conn.execute(
            select(Trial.id).where(*conds).order_by(Trial.predicted_cost, Trial.id).limit(k)
        ).scalars()
    )
    return len(measured & predicted) / len(measured) if measured else None


def model_report(engine: Engine, job_id: int, *, k: int = 10, windows: int = 8) -> ModelReport:
    """Spearman's rho, top-k recall (of the k truly fastest, how many are among the k
    predicted fastest) and MAPE, over the whole job and per model version.

    A model version is the trials' `model_version` when they record it (the model retrained
    between versions); otherwise the job's predicted trials are cut, in recording order,
    into `windows` equal windows. Over the whole job, n, top-k recall and MAPE are always
    exact; with more than EXACT_LIMIT predicted trials, Spearman's rho and the per-window
    metrics come from every `sample_step`-th trial (by id).
    """
    with engine.connect() as conn:
        version = Trial.model_version
        n, mape, n_versioned = conn.execute(
            select(
                func.count(),
                func.avg(
                    func.abs(Trial.predicted_cost - Trial.latency_median_s) / Trial.latency_median_s
                ),
                func.count(version),
            ).where(*_predicted(job_id))
        ).one()
        if not n:
            return ModelReport(overall=None)
        step = max(1, math.ceil(n / EXACT_LIMIT))
        sample = conn.execute(_metric_stmt(job_id, k, literal(0), step)).first()
        if sample is None:  # ids happened to miss the sample: use every trial
            step = 1
            sample = conn.execute(_metric_stmt(job_id, k, literal(0), step)).one()
        overall = ModelMetrics(
            label="whole job",
            n=n,
            spearman=_metrics("", sample, k).spearman,
            topk_recall=_exact_topk_recall(conn, job_id, k),
            mape_pct=mape * 100.0 if mape is not None else None,
        )
        if n_versioned:
            group: Any = func.coalesce(version, -1)
            by = "model version"
        else:
            group = func.ntile(windows).over(order_by=Trial.id)
            by = "window"
        rows = conn.execute(_metric_stmt(job_id, k, group, step)).all()
    out = [
        _metrics(f"v{r.g}" if by == "model version" else f"{r.g}/{len(rows)}", r, k) for r in rows
    ]
    return ModelReport(overall=overall, windows=out, by=by, sample_step=step)


def prediction_sample(
    engine: Engine, job_id: int, limit: int = 3000, n: int | None = None
) -> list[tuple[float, float]]:
    """About `limit` (predicted, measured) pairs spread evenly over a job's trials (every
    step-th id), for a scatter plot. `n`: the job's predicted count, if known."""
    total = n if n is not None else n_predicted(engine, job_id)
    if total == 0:
        return []
    step = max(1, math.ceil(total / limit))
    conds = _predicted(job_id)
    if step > 1:
        conds.append(Trial.id % step == 0)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Trial.predicted_cost, Trial.latency_median_s).where(*conds).limit(2 * limit)
        ).all()
    return [(p, m) for p, m in rows]
