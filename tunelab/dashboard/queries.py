"""Every query the dashboard runs: small, aggregated results computed in SQL.

Functions take an Engine and return a few rows (dataclasses or dicts), never a whole
table of trials: counts and minima are GROUP BYs, curves are window functions that keep
only the points where something changes, and trial lists are pages (LIMIT/OFFSET).
The same SQL runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Engine,
    Float,
    Select,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
)

from tunelab.platform import jobs
from tunelab.platform.rows import column_union, write_csv
from tunelab.schema.models import (
    Environment,
    Job,
    Trial,
    TrialStatus,
    Workload,
    trial_baseline,
)

OK = str(TrialStatus.ok)


# --------------------------------------------------------------------------- jobs


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

    @property
    def label(self) -> str:
        return f"{self.id}: {self.name} ({self.strategy})"


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:  # SQLite hands back naive datetimes
        return ts.replace(tzinfo=UTC)
    return ts


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
        id=r.id, name=r.name, kind=r.kind, target=r.target, status=jobs.display_status(r),
        workload=r.workload, strategy=r.strategy or "-", n_planned=r.n_planned,
        n_done=r.n_done, n_ok=r.n_ok, n_failed=r.n_failed, best_latency_s=r.best_latency_s,
        best_params=r.best_params, created_at=_aware(r.created_at) or now, error=r.error,
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
    """Trials of a job by status, most frequent first (`jobs.status_counts`, ordered)."""
    counts = jobs.status_counts(engine, job_id)
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
            select(counts.c.n, *cols)
            .select_from(counts.outerjoin(Environment, Environment.id == counts.c.env))
            .order_by(counts.c.n.desc())
        ).all()
    return [{"trials": r[0], **{c.key: v for c, v in zip(cols, r[1:], strict=True)}} for r in rows]


def common_errors(engine: Engine, job_id: int, limit: int = 5) -> list[dict[str, Any]]:
    """The most frequent (status, error text) pairs among a job's failed trials."""
    text = func.substr(Trial.error, 1, 300)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Trial.status, text, func.count())
            .where(Trial.job_id == job_id, Trial.status != OK, Trial.error.is_not(None))
            .group_by(Trial.status, text)
            .order_by(func.count().desc())
            .limit(limit)
        ).all()
    return [{"status": s, "error": e, "trials": n} for s, e, n in rows]


# --------------------------------------------------------------------------- curves


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


# --------------------------------------------------------------------------- model


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
            func.count(),
            func.sum(rp),
            func.sum(rm),
            func.sum(rp * rp),
            func.sum(rm * rm),
            func.sum(rp * rm),
            func.sum(case((and_(ranked.c.op <= k, ranked.c.om <= k), 1), else_=0)),
            func.avg(func.abs(ranked.c.pred - ranked.c.meas) / ranked.c.meas),
            func.min(ranked.c.id),
            func.max(ranked.c.id),
        )
        .group_by(ranked.c.g)
        .order_by(ranked.c.g)
    )


def _metrics(label: str, row: Any, k: int) -> ModelMetrics:
    n = row[1]
    return ModelMetrics(
        label=label,
        n=n,
        spearman=_pearson(n, *row[2:7]),
        topk_recall=row[7] / min(k, n) if n else None,
        mape_pct=row[8] * 100.0 if row[8] is not None else None,
        first_trial=row[9],
        last_trial=row[10],
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

    A model version is `extra.model_version` when trials record it (the model retrained
    between versions); otherwise the job's predicted trials are cut, in recording order,
    into `windows` equal windows. Over the whole job, n, top-k recall and MAPE are always
    exact; with more than EXACT_LIMIT predicted trials, Spearman's rho and the per-window
    metrics come from every `sample_step`-th trial (by id).
    """
    with engine.connect() as conn:
        version = Trial.extra["model_version"].as_integer()
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
        _metrics(f"v{r[0]}" if by == "model version" else f"{r[0]}/{len(rows)}", r, k) for r in rows
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


# --------------------------------------------------------------------------- speedups


@dataclass(frozen=True)
class SpeedupRow:
    """The best latency of each variant of one job's workload on one device."""

    job_id: int
    job: str
    workload: str
    device: str
    pipelined_s: float | None
    unpipelined_s: float | None
    baselines: dict[str, float]

    @property
    def speedup(self) -> float | None:
        """Unpipelined / pipelined: how much faster pipelining made the best kernel."""
        if self.pipelined_s and self.unpipelined_s:
            return self.unpipelined_s / self.pipelined_s
        return None

    def vs_baseline(self, name: str) -> float | None:
        """Baseline / best tuned kernel (pipelined or not): > 1 means tunelab wins."""
        best = min(x for x in (self.pipelined_s, self.unpipelined_s, math.inf) if x)
        base = self.baselines.get(name)
        return base / best if base and best < math.inf else None


def variant_expr() -> Any:
    """`baseline:<name>` for trials with extra.baseline, else pipelined / unpipelined by
    params.stages or params.reg_stages (> 1 pipelined; missing counts as 1)."""
    baseline = trial_baseline()
    stages = func.coalesce(Trial.params["stages"].as_integer(), 1)
    reg_stages = func.coalesce(Trial.params["reg_stages"].as_integer(), 1)
    return case(
        (baseline.is_not(None), literal("baseline:") + baseline),
        (or_(stages > 1, reg_stages > 1), literal("pipelined")),
        else_=literal("unpipelined"),
    )


def speedups(engine: Engine, job_ids: Sequence[int]) -> list[SpeedupRow]:
    """Per job: best ok latency pipelined, unpipelined and per baseline, with the
    workload and the device (GPU model, else CPU model, else target) it ran on."""
    if not job_ids:
        return []
    variant = variant_expr().label("variant")
    best = (
        select(Trial.job_id, variant, func.min(Trial.latency_median_s).label("best"))
        .where(Trial.job_id.in_(list(job_ids)), Trial.status == OK)
        .group_by(Trial.job_id, variant)
    )
    best_trial = Trial.__table__.alias("bt")
    device = func.coalesce(Environment.gpu_model, Environment.cpu_model, Job.target)
    meta = (
        select(Job.id, Job.name, Workload.description, device)
        .join(Workload, Workload.id == Job.workload_id)
        .outerjoin(best_trial, best_trial.c.id == Job.best_trial_id)
        .outerjoin(Environment, Environment.id == best_trial.c.environment_id)
        .where(Job.id.in_(list(job_ids)))
    )
    with engine.connect() as conn:
        bests = conn.execute(best).all()
        jobs = {r[0]: r[1:] for r in conn.execute(meta)}
    by_job: dict[int, dict[str, float]] = {}
    for job_id, var, lat in bests:
        if lat is not None:
            by_job.setdefault(job_id, {})[var] = lat
    out = []
    for job_id in job_ids:
        if job_id not in jobs or job_id not in by_job:
            continue
        v = by_job[job_id]
        name, workload, dev = jobs[job_id]
        out.append(
            SpeedupRow(
                job_id=job_id,
                job=name,
                workload=workload,
                device=dev or "-",
                pipelined_s=v.get("pipelined"),
                unpipelined_s=v.get("unpipelined"),
                baselines={
                    k.removeprefix("baseline:"): x
                    for k, x in v.items()
                    if k.startswith("baseline:")
                },
            )
        )
    return out


def geomean(values: Sequence[float | None]) -> float | None:
    """Geometric mean of the positive values given (None if none)."""
    xs = [x for x in values if x is not None and x > 0]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialFilter:
    """What the Trials page filters on. `params` maps a parameter name to a value."""

    job_id: int | None = None
    statuses: tuple[str, ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    min_latency_s: float | None = None
    max_latency_s: float | None = None
    order: str = "id"  # "id" (recording order) or "latency" (fastest first)

    def where(self) -> list[Any]:
        conds: list[Any] = []
        if self.job_id is not None:
            conds.append(Trial.job_id == self.job_id)
        if self.statuses:
            conds.append(Trial.status.in_(list(self.statuses)))
        for key, value in self.params:
            try:
                number = float(value)
            except ValueError:
                conds.append(Trial.params[key].as_string() == value)
            else:
                conds.append(Trial.params[key].as_float() == number)
        if self.min_latency_s is not None:
            conds.append(Trial.latency_median_s >= self.min_latency_s)
        if self.max_latency_s is not None:
            conds.append(Trial.latency_median_s <= self.max_latency_s)
        return conds

    def order_by(self) -> list[Any]:
        if self.order == "latency":
            return [Trial.latency_median_s.is_(None), Trial.latency_median_s, Trial.id]
        return [Trial.id]


TRIAL_LIST_COLUMNS = (
    Trial.id, Trial.job_id, Trial.status, Trial.latency_median_s, Trial.latency_min_s,
    Trial.latency_stdev_s, Trial.n_repeats, Trial.predicted_cost, Trial.build_s, Trial.run_s,
    Trial.attempts, Trial.worker_node, Trial.params,
)  # fmt: skip


def count_trials(engine: Engine, flt: TrialFilter) -> int:
    """How many trials match `flt`."""
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(Trial).where(*flt.where())
        return conn.execute(stmt).scalar_one()


def trial_page(
    engine: Engine, flt: TrialFilter, *, page: int = 0, page_size: int = 50
) -> list[dict[str, Any]]:
    """One page of trials matching `flt` (page 0 first), as flat dicts: the statistics
    as columns and each parameter as a `p.NAME` column."""
    stmt = (
        select(*TRIAL_LIST_COLUMNS)
        .where(*flt.where())
        .order_by(*flt.order_by())
        .limit(page_size)
        .offset(page * page_size)
    )
    with engine.connect() as conn:
        return [_flat(r) for r in conn.execute(stmt)]


def _flat(r: Any) -> dict[str, Any]:
    row = {c.key: v for c, v in zip(TRIAL_LIST_COLUMNS[:-1], r[:-1], strict=True)}
    for k, v in (r[-1] or {}).items():
        row[f"p.{k}"] = v
    return row


def trial_detail(engine: Engine, trial_id: int) -> dict[str, Any] | None:
    """Every column of one trial, plus its environment's host and models."""
    with engine.connect() as conn:
        r = conn.execute(
            select(Trial.__table__, Environment.host, Environment.cpu_model, Environment.gpu_model)
            .outerjoin(Environment, Environment.id == Trial.environment_id)
            .where(Trial.id == trial_id)
        ).first()
    return dict(r._mapping) if r else None


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text (with a header) for a few flat rows, e.g. one page of trials."""
    buf = io.StringIO()
    write_csv(buf, rows)
    return buf.getvalue()


def iter_trials_csv(engine: Engine, flt: TrialFilter, chunk: int = 5000) -> Iterator[str]:
    """Every trial matching `flt` as CSV text, streamed from the database in chunks
    (keyset pagination on id; parameters as `p.NAME` columns from the first chunk)."""
    header: list[str] | None = None
    last_id = None
    while True:
        conds = flt.where()
        if last_id is not None:
            conds.append(Trial.id > last_id)
        with engine.connect() as conn:
            rows = [
                _flat(r)
                for r in conn.execute(
                    select(*TRIAL_LIST_COLUMNS).where(*conds).order_by(Trial.id).limit(chunk)
                )
            ]
        if not rows:
            if header is None:
                yield ",".join(c.key for c in TRIAL_LIST_COLUMNS[:-1]) + "\n"
            return
        buf = io.StringIO()
        if header is None:
            header = column_union(rows)
            write_csv(buf, rows, header)
        else:
            write_csv(buf, rows, header, header_line=False)
        yield buf.getvalue()
        last_id = rows[-1]["id"]
