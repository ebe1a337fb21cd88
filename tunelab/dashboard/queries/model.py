"""Model accuracy: how well a cost model's predictions (`predicted_cost`) rank and
estimate measured latency, which model made them, and how that changes as it retrains.

One definition of each metric, used by every page (the headline, the windows, the cost
models side by side), over `ok` trials with both a prediction and a measured median:

- Spearman's rho: Pearson's r of average ranks (tied values share the mean position).
- top-k recall: the expected share of the k fastest measured trials that are among the k
  predicted fastest when ties are broken at random. A trial tied with others across the
  k-th place is in a top k with share (k - #better) / #tied (`tie_share`), so recall =
  sum over trials of share_measured * share_predicted / k, whatever the trial ids.
  Undefined (None) when n <= k: every trial is then in both sets.
- MAPE: mean |predicted - measured| / measured (predicted_cost in seconds).

Windows follow the model as it retrains: whole model versions (`model_version`) in
recording order, merged until a window holds at least `MIN_WINDOW` trials (and at most
`MAX_WINDOWS` windows); without versions, equal runs of trials in recording order.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Engine, Float, Select, case, cast, func, literal, select

from tunelab.dashboard.queries.common import OK
from tunelab.schema.models import Direction, Job, Trial, Workload

# Above this many predicted trials, Spearman's rho and the per-window metrics are
# computed on an evenly spread sample of about this many (the page says so).
EXACT_LIMIT = 50_000
# A window holds at least this many trials (rho over 8 points swings from -0.8 to 0.9),
MIN_WINDOW = 32
# and a job is cut into at most this many windows.
MAX_WINDOWS = 10
# Versions are counted in at most about this many groups of consecutive versions,
MAX_BUCKETS = 4000
# then in this many stretches of a job to find the windows' cuts.
STRETCHES = 200


@dataclass(frozen=True)
class ModelMetrics:
    """How well predicted_cost ranks and estimates measured latency over some trials."""

    label: str
    n: int
    spearman: float | None
    topk_recall: float | None
    mape_pct: float | None
    first_trial: int | None = None  # trial ids
    last_trial: int | None = None
    first_version: int | None = None
    last_version: int | None = None


@dataclass(frozen=True)
class PredictionSource:
    """One model whose predictions a job's trials record (`Trial.model`, None when they
    do not say), over which trials and model versions."""

    model: str | None
    n: int
    first_version: int | None
    last_version: int | None
    first_trial: int
    last_trial: int

    @property
    def text(self) -> str:
        name = f"`{self.model}`" if self.model else "an unnamed model (no `model` recorded)"
        if self.first_version is None:
            versions = ""
        elif self.first_version == self.last_version:
            versions = f", version {self.first_version}"
        else:
            versions = f", versions {self.first_version}-{self.last_version}"
        return f"{name} ({self.n:,} trials{versions})"


@dataclass
class ModelReport:
    """Metrics over a job's whole run and per window, and where the predictions came from."""

    overall: ModelMetrics | None
    windows: list[ModelMetrics] = field(default_factory=list)
    by: str = "window"  # "model version": windows of whole versions; "window": of trials
    sample_step: int = 1  # > 1: rho and windows computed on every sample_step-th trial
    window_size: int = MIN_WINDOW  # the fewest (sampled) trials a window holds
    k: int = 10
    sources: list[PredictionSource] = field(default_factory=list)


# -- definitions ---------------------------------------------------------------------


def tie_share(k: int, better: int, better_or_equal: int) -> float:
    """A trial's share of a top-k set: 1 when it and all its ties fit in the first k,
    0 when k others are strictly better, else (k - better) / (number tied), its chance
    of being in the top k when the tie is broken at random."""
    if better_or_equal <= k:
        return 1.0
    if better >= k:
        return 0.0
    return (k - better) / (better_or_equal - better)


def _tie_share_sql(k: int, better: Any, better_or_equal: Any) -> Any:
    """`tie_share` in SQL, for integer expressions."""
    return case(
        (better_or_equal <= k, 1.0),
        (better >= k, 0.0),
        else_=cast(k - better, Float) / cast(better_or_equal - better, Float),
    )


def topk_recall(predicted: Sequence[float], measured: Sequence[float], k: int) -> float | None:
    """Top-k recall of `predicted` against `measured` (pairs, smaller is better) by the
    module's definition, in Python: what the SQL computes, for checks and small lists."""
    n = len(measured)
    if n <= k:
        return None

    def shares(xs: Sequence[float]) -> list[float]:
        s = sorted(xs)
        return [tie_share(k, bisect_left(s, x), bisect_right(s, x)) for x in xs]

    return sum(a * b for a, b in zip(shares(predicted), shares(measured), strict=True)) / k


def _pearson(n: int, sx: float, sy: float, sxx: float, syy: float, sxy: float) -> float | None:
    vx = n * sxx - sx * sx
    vy = n * syy - sy * sy
    if n < 2 or vx <= 0 or vy <= 0:
        return None
    return (n * sxy - sx * sy) / math.sqrt(vx * vy)


def not_applicable(objective: str, direction: str) -> str | None:
    """Why a latency cost model's metrics make no sense for a job with this primary
    objective, or None when they do (a minimised latency)."""
    if objective == "latency_s" and direction == Direction.minimize:
        return None
    return (
        f"this job {'maximises' if direction == Direction.maximize else 'minimises'} "
        f"`{objective}`, and these metrics compare a latency prediction (`predicted_cost`) "
        "with the measured latency"
    )


def guided(strategy: str) -> bool | None:
    """Whether a strategy's recorded predictions chose its candidates: the model strategy
    measures what its model ranks best; exhaustive and random only record the kind's
    analytical prediction alongside. None for others (not recorded)."""
    if strategy == "model":
        return True
    if strategy in ("exhaustive", "random"):
        return False
    return None


def provenance(strategy: str, sources: Sequence[PredictionSource]) -> str:
    """Where a job's predictions came from, in a sentence."""
    if not sources:
        return "No trial of this job records a prediction."
    models = ", then ".join(s.text for s in sources)
    use = guided(strategy)
    if use:
        return (
            f"Predictions by {models}. They guided the search: the model strategy "
            "measured the candidates its model ranked best."
        )
    if use is False:
        return (
            f"Predictions by {models}, recorded alongside: the {strategy} strategy chose "
            "its candidates without them."
        )
    return (
        f"Predictions by {models}, recorded by the {strategy} strategy (whether they "
        "guided it is not recorded)."
    )


# -- SQL -----------------------------------------------------------------------------


def _predicted(job_id: int) -> list[Any]:
    return [
        Trial.job_id == job_id,
        Trial.status == OK,
        Trial.predicted_cost.is_not(None),
        Trial.latency_median_s.is_not(None),
    ]


def _kth(conn: Any, job_id: int, col: Any, k: int) -> float | None:
    """The k-th smallest `col` among a job's predicted trials, None when there are no
    more than k (recall is then undefined). The measured side walks the (job, status,
    latency) index; the predicted side is one top-N pass."""
    rows = conn.execute(
        select(col).where(*_predicted(job_id)).order_by(col).limit(2).offset(k - 1)
    ).all()
    return rows[0][0] if len(rows) == 2 else None


def _count_if(cond: Any) -> Any:
    return func.sum(case((cond, 1), else_=0))


# Top-k recall's counts: better than (lt) / tied with (eq) the k-th measured (m) and
# predicted (p) values, and each combination of the two.
COUNTS = ("lt_m", "eq_m", "lt_p", "eq_p", "lt_lt", "lt_eq", "eq_lt", "eq_eq")


def _totals_stmt(job_id: int, vm: float | None, vp: float | None, bucket: int) -> Select[Any]:
    """One pass over a job's predicted trials: per model and per stretch of its versions
    (a few rows, whatever the number of versions), n, the absolute percentage errors'
    sum, trial ids and versions, and the counts top-k recall needs: trials better than /
    tied with the k-th measured (vm) and predicted (vp) values, and each combination.

    Versions are counted `bucket` at a time (consecutive numbers of one model, so that a
    job with 75,000 versions groups its trials in a few thousand rows, not 75,000), and
    a stretch (`w`) gathers the buckets that start in the same 1/STRETCHES of the job's
    trials, in recording order: `version_cuts` joins stretches into windows of whole
    versions (a stretch is far smaller than a window)."""
    pred, meas = Trial.predicted_cost, Trial.latency_median_s
    kth_m, kth_p = literal(vm, Float), literal(vp, Float)  # NULL: no counts (n <= k)
    lt_m, eq_m = meas < kth_m, meas == kth_m
    lt_p, eq_p = pred < kth_p, pred == kth_p
    flags = dict(zip(COUNTS, (lt_m, eq_m, lt_p, eq_p, lt_m & lt_p, lt_m & eq_p, eq_m & lt_p,
                              eq_m & eq_p), strict=True))  # fmt: skip
    per_version = (
        select(
            Trial.model.label("model"),
            func.min(Trial.model_version).label("first_version"),
            func.max(Trial.model_version).label("last_version"),
            func.count().label("n"),
            func.sum(func.abs(pred - meas) / meas).label("ape"),
            func.min(Trial.id).label("first_id"),
            func.max(Trial.id).label("last_id"),
            *(_count_if(cond).label(name) for name, cond in flags.items()),
        )
        .where(*_predicted(job_id))
        .group_by(Trial.model, Trial.model_version // bucket)
        .subquery()
    )
    v = per_version.c
    ordered = select(
        v,
        cast(func.sum(v.n).over(order_by=v.first_id, rows=(None, 0)) - v.n, BigInteger).label(
            "before"
        ),
        cast(func.sum(v.n).over(), BigInteger).label("total"),
    ).subquery()
    o = ordered.c
    w = (o.before * STRETCHES // o.total).label("w")
    return select(
        o.model,
        w,
        func.sum(o.n).label("n"),
        func.sum(o.ape).label("ape"),
        func.min(o.first_id).label("first_id"),
        func.max(o.last_id).label("last_id"),
        func.min(o.first_version).label("first_version"),
        func.max(o.last_version).label("last_version"),
        *(func.sum(getattr(o, name)).label(name) for name in flags),
    ).group_by(o.model, w)


def _recall_from_counts(k: int, c: dict[str, int]) -> float:
    """Top-k recall from `_totals_stmt`'s counts: trials better than the k-th value on a
    side have share 1 there, those tied with it share `tie_share`, the rest 0."""
    sm = tie_share(k, c["lt_m"], c["lt_m"] + c["eq_m"])
    sp = tie_share(k, c["lt_p"], c["lt_p"] + c["eq_p"])
    return (c["lt_lt"] + sp * c["lt_eq"] + sm * c["eq_lt"] + sm * sp * c["eq_eq"]) / k


def version_cuts(units: Sequence[tuple[int, int]], size: int) -> list[int]:
    """Where windows of whole model versions start: `units` are (first trial id, trials)
    of versions, or of stretches of whole versions, in any order. They are taken in
    recording order and a window is closed once it holds total / windows trials
    (windows = total // size, so at least `size`); a short remainder joins the last
    window. Returns the first trial ids of the second and later windows."""
    ordered = sorted(units)
    total = sum(n for _, n in ordered)
    target = total / max(1, total // size)
    cuts: list[int] = []
    held = 0
    for first, n in ordered:
        if held >= target:
            cuts.append(first)
            held = 0
        held += n
    if cuts and held < target:
        cuts.pop()
    return cuts


def _window_stmt(
    job_id: int, k: int, step: int, *, cuts: Sequence[int] | None = None, size: int | None = None
) -> Select[Any]:
    """Per window (one row each): n, the rank sums of Spearman's rho within the window
    and over the whole sample (summed over windows for the overall rho), top-k recall's
    hits, the mean percentage error, trial ids and versions. Windows start at the trial
    ids `cuts` (whole versions), or are `size` or more trials in recording order cut
    evenly; neither: one window."""
    conds = _predicted(job_id)
    if step > 1:
        conds.append(Trial.id % step == 0)
    cols = (
        Trial.id.label("id"),
        Trial.predicted_cost.label("pred"),
        Trial.latency_median_s.label("meas"),
        Trial.model_version.label("ver"),
    )
    if size is not None:
        # Runs of trials: position * windows // total, windows = total // size (>= 1).
        ordered = select(
            *cols,
            (func.row_number().over(order_by=Trial.id) - 1).label("before"),
            func.count().over().label("total"),
        ).where(*conds).subquery()  # fmt: skip
        o = ordered.c
        windows = case((o.total // size > 1, o.total // size), else_=1)
        staged = select(o.id, o.pred, o.meas, o.ver, (o.before * windows // o.total).label("w"))
        staged = staged.subquery()
    else:
        w: Any = literal(0)
        if cuts:
            w = case(*((Trial.id >= c, i) for i, c in reversed(list(enumerate(cuts, 1)))),
                     else_=0)  # fmt: skip
        staged = select(*cols, w.label("w")).where(*conds).subquery()

    def ranks(col: Any, by_window: bool) -> tuple[Any, Any]:
        # rank() is 1 + #better, count() over the same order #better-or-equal (the
        # default frame ends with the current row's peers): their mean is the average
        # rank, and both give tie_share.
        part = {"partition_by": staged.c.w} if by_window else {}
        rank = func.rank().over(**part, order_by=col)
        upto = func.count().over(**part, order_by=col)
        return rank, upto

    (rp, lp), (rm, lm) = ranks(staged.c.pred, True), ranks(staged.c.meas, True)
    (gp, gup), (gm, gum) = ranks(staged.c.pred, False), ranks(staged.c.meas, False)
    ranked = select(
        staged.c.w, staged.c.id, staged.c.pred, staged.c.meas, staged.c.ver,
        rp.label("rp"), lp.label("lp"), rm.label("rm"), lm.label("lm"),
        gp.label("gp"), gup.label("gup"), gm.label("gm"), gum.label("gum"),
    ).subquery()  # fmt: skip
    r = ranked.c

    def avg(rank: Any, upto: Any) -> Any:
        return (cast(rank, Float) + upto) / 2.0

    ap, am, gap, gam = avg(r.rp, r.lp), avg(r.rm, r.lm), avg(r.gp, r.gup), avg(r.gm, r.gum)
    hits = _tie_share_sql(k, r.rp - 1, r.lp) * _tie_share_sql(k, r.rm - 1, r.lm)
    return (
        select(
            r.w,
            func.count().label("n"),
            func.sum(ap).label("sx"),
            func.sum(am).label("sy"),
            func.sum(ap * ap).label("sxx"),
            func.sum(am * am).label("syy"),
            func.sum(ap * am).label("sxy"),
            func.sum(gap).label("gx"),
            func.sum(gam).label("gy"),
            func.sum(gap * gap).label("gxx"),
            func.sum(gam * gam).label("gyy"),
            func.sum(gap * gam).label("gxy"),
            func.sum(hits).label("hits"),
            func.avg(func.abs(r.pred - r.meas) / r.meas).label("mape"),
            func.min(r.id).label("first_id"),
            func.max(r.id).label("last_id"),
            func.min(r.ver).label("first_version"),
            func.max(r.ver).label("last_version"),
        )
        .group_by(r.w)
        .order_by(r.w)
    )


def _window_metrics(label: str, row: Any, k: int) -> ModelMetrics:
    n = row.n
    return ModelMetrics(
        label=label,
        n=n,
        spearman=_pearson(n, row.sx, row.sy, row.sxx, row.syy, row.sxy),
        topk_recall=row.hits / k if n > k else None,
        mape_pct=row.mape * 100.0 if row.mape is not None else None,
        first_trial=row.first_id,
        last_trial=row.last_id,
        first_version=row.first_version,
        last_version=row.last_version,
    )


def _version_label(first: int | None, last: int | None) -> str:
    if first is None:
        return "-"
    return f"v{first}" if first == last else f"v{first}-v{last}"


def n_predicted(engine: Engine, job_id: int) -> int:
    """How many ok trials of a job have both a prediction and a measurement."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(*_predicted(job_id))).scalar_one()


def _sources(rows: Sequence[Any]) -> list[PredictionSource]:
    """`_totals_stmt`'s rows summed per model, in the order the models first predicted."""
    by_model: dict[str | None, list[Any]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    out = []
    for model, mine in by_model.items():
        first = [r.first_version for r in mine if r.first_version is not None]
        last = [r.last_version for r in mine if r.last_version is not None]
        out.append(
            PredictionSource(
                model, sum(int(r.n) for r in mine), min(first, default=None),
                max(last, default=None), min(r.first_id for r in mine),
                max(r.last_id for r in mine),
            )
        )  # fmt: skip
    return sorted(out, key=lambda s: s.first_trial)


def _stretches(rows: Sequence[Any]) -> list[tuple[int, int]]:
    """(first trial id, trials) of each stretch of versions, over every model."""
    by_w: dict[int, list[Any]] = {}
    for r in rows:
        by_w.setdefault(int(r.w), []).append(r)
    return [(min(r.first_id for r in rs), sum(int(r.n) for r in rs)) for rs in by_w.values()]


def model_report(
    engine: Engine, job_id: int, *, k: int = 10, per_window: bool = True
) -> ModelReport:
    """Spearman's rho, top-k recall and MAPE (the module's definitions) over a job's
    whole run and per window, and the models that made its predictions.

    n, top-k recall and MAPE over the whole job are exact (two top-k look-ups and one
    pass, which also counts each model version's trials for the windows); with more
    than EXACT_LIMIT predicted trials, Spearman's rho and the windows come from every
    `sample_step`-th trial (by id). `per_window` False: one window (the whole job)."""
    with engine.connect() as conn:
        vm = _kth(conn, job_id, Trial.latency_median_s, k)
        vp = _kth(conn, job_id, Trial.predicted_cost, k) if vm is not None else None
        n_done = conn.execute(select(Job.n_done).where(Job.id == job_id)).scalar() or 0
        bucket = max(1, math.ceil(n_done / MAX_BUCKETS))
        totals = conn.execute(_totals_stmt(job_id, vm, vp, bucket)).all()
        n = sum(int(r.n) for r in totals)
        if not n:
            return ModelReport(overall=None, k=k)
        sums = {c: sum(int(getattr(r, c) or 0) for r in totals) for c in COUNTS}
        ape = sum(float(r.ape or 0) for r in totals)
        sources = _sources(totals)
        step = max(1, math.ceil(n / EXACT_LIMIT))
        size = max(MIN_WINDOW, math.ceil(n / MAX_WINDOWS))
        versioned = any(s.first_version is not None for s in sources)
        window: dict[str, Any] = {}
        if per_window and versioned:
            window["cuts"] = version_cuts(_stretches(totals), size)
        elif per_window:
            window["size"] = max(MIN_WINDOW, math.ceil(math.ceil(n / step) / MAX_WINDOWS))
        rows = conn.execute(_window_stmt(job_id, k, step, **window)).all()
        if not rows:  # ids happened to miss the sample: use every trial
            step = 1
            rows = conn.execute(_window_stmt(job_id, k, 1, **window)).all()
    total = sum(r.n for r in rows)
    g = {c: sum(getattr(r, c) for r in rows) for c in ("gx", "gy", "gxx", "gyy", "gxy")}
    overall = ModelMetrics(
        label="whole job",
        n=n,
        spearman=_pearson(total, g["gx"], g["gy"], g["gxx"], g["gyy"], g["gxy"]),
        topk_recall=_recall_from_counts(k, sums) if vm is not None and vp is not None else None,
        mape_pct=ape / n * 100.0,
        first_trial=min(s.first_trial for s in sources),
        last_trial=max(s.last_trial for s in sources),
        first_version=min((s.first_version for s in sources if s.first_version is not None),
                          default=None),
        last_version=max((s.last_version for s in sources if s.last_version is not None),
                         default=None),
    )  # fmt: skip
    windows = []
    if per_window:
        for i, r in enumerate(rows):
            label = (_version_label(r.first_version, r.last_version) if versioned
                     else f"{i + 1}/{len(rows)}")  # fmt: skip
            windows.append(_window_metrics(label, r, k))
    return ModelReport(
        overall=overall,
        windows=windows,
        by="model version" if versioned else "window",
        sample_step=step,
        window_size=size,
        k=k,
        sources=sources,
    )


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


@dataclass(frozen=True)
class WorkloadJobs:
    """A workload and the jobs that tuned it (newest first), for picking jobs to compare."""

    workload_id: int
    description: str
    kind: str
    job_ids: tuple[int, ...]

    @property
    def label(self) -> str:
        n = len(self.job_ids)
        return f"{self.description} ({self.kind}, {n} job{'s' if n != 1 else ''})"


def workloads_with_jobs(engine: Engine, limit: int = 2000) -> list[WorkloadJobs]:
    """Workloads of the newest `limit` jobs, the one tuned most recently first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Job.id, Job.workload_id, Workload.description, Workload.kind)
            .join(Workload, Workload.id == Job.workload_id)
            .order_by(Job.id.desc())
            .limit(limit)
        ).all()
    found: dict[int, tuple[str, str, list[int]]] = {}
    for r in rows:
        found.setdefault(r.workload_id, (r.description, r.kind, []))[2].append(r.id)
    return [WorkloadJobs(w, d, kind, tuple(ids)) for w, (d, kind, ids) in found.items()]
