"""Intermediate metrics ("steps") of a job or of one trial: its learning curves.

A step belongs to a job (`trial_key` "") or to one trial of it (`trial_key` = the trial's
`candidate` hash). (job, trial_key, step) is unique and writes are insert-or-ignore, so a
step reported twice keeps its first record. Writers buffer and flush in one statement;
readers stream steps in order, or down-sample a curve in the database.

Everything takes the engine, so a driver and a Ray worker (with its own engine opened by
URL) use the same functions.
"""

from __future__ import annotations

import math
import numbers
import operator
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, func, literal_column, select, text
from sqlalchemy.exc import DataError

from tunelab.platform.jobs import insert_ignore
from tunelab.schema.models import Step

MAX_STEP = 2**63 - 1  # steps.step is a BIGINT
TRIAL_KEY_LEN = 64
READ_BATCH = 2000

Metric = float | int | str | bool | None


def _check_trial_key(trial_key: str) -> str:
    if not isinstance(trial_key, str) or len(trial_key) > TRIAL_KEY_LEN:
        raise ValueError(f"trial_key must be a string of at most {TRIAL_KEY_LEN} characters")
    return trial_key


def _check_step(step: Any) -> int:
    if isinstance(step, bool):
        raise TypeError("step must be an integer, not a bool")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, got {type(step).__name__}") from None
    if not 0 <= value <= MAX_STEP:
        raise ValueError(f"step must be in [0, 2**63), got {value}")
    return value


def check_metric_name(name: Any) -> str:
    """A metric name: a non-empty string with no quote, backslash or control character
    (SQLite's JSON paths cannot quote those)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric names must be non-empty strings, got {name!r}")
    if any(c in '"\\' or ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"metric name {name!r} has a quote, backslash or control character")
    return name


def _check_value(name: str, value: Any) -> Metric:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    # numpy and other numeric scalars: store them as plain JSON numbers
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        as_float = float(value)
        return as_float if math.isfinite(as_float) else None
    raise TypeError(f"metric {name!r}: {type(value).__name__} is not a JSON scalar")


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, Metric]:
    """Validated metrics: a non-empty mapping of metric names to JSON scalars.
    NaN and infinite floats become None (JSON has no such numbers)."""
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError("metrics must be a non-empty dict")
    return {check_metric_name(k): _check_value(k, v) for k, v in metrics.items()}


class StepWriter:
    """Buffers steps of one job and writes them in one INSERT … ON CONFLICT DO NOTHING.

    Call `add` per step and `flush` when `due()` (or at the end). A step already in the
    buffer or in the database keeps its first record. A flush that fails (database down,
    job deleted) keeps every buffered row and re-raises, so a later flush retries them.
    Thread-safe: `add` never waits for a flush in progress.

    Metric values are JSON scalars (float, int, str, bool or None); NaN and infinite
    floats are stored as null.
    """

    def __init__(
        self, engine: Engine, job_id: int, *, max_rows: int = 5000, max_wait_s: float = 1.0
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.engine = engine
        self.job_id = int(job_id)
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._stmt = insert_ignore(engine, Step.__table__)
        self._lock = threading.Lock()
        self._buf: dict[tuple[str, int], dict[str, Any]] = {}
        self._since: float | None = None  # monotonic time of the oldest buffered row

    def add(self, step: int, metrics: Mapping[str, Any], trial_key: str = "") -> None:
        """Buffer one step's metrics (of the job, or of the trial `trial_key`)."""
        row = {
            "job_id": self.job_id,
            "trial_key": _check_trial_key(trial_key),
            "step": _check_step(step),
            "metrics": check_metrics(metrics),
            "recorded_at": datetime.now(UTC),
        }
        key = (row["trial_key"], row["step"])
        with self._lock:
            if key not in self._buf:  # the first report of a step wins
                self._buf[key] = row
                if self._since is None:
                    self._since = time.monotonic()

    def pending(self) -> int:
        """Rows buffered and not yet written."""
        return len(self._buf)

    def due(self) -> bool:
        """Whether the buffer is full or its oldest row has waited `max_wait_s`."""
        since = self._since
        if since is None:
            return False
        return len(self._buf) >= self.max_rows or time.monotonic() - since >= self.max_wait_s

    def flush(self) -> int:
        """Write every buffered row in one transaction; returns how many were sent
        (steps already recorded are skipped by the database). On error the rows stay
        buffered and the error is re-raised."""
        with self._lock:
            batch, since = self._buf, self._since
            self._buf, self._since = {}, None
        if not batch:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(self._stmt, list(batch.values()))
        except BaseException:
            with self._lock:
                # The failed rows were reported before anything added meanwhile: first wins.
                for key, row in self._buf.items():
                    batch.setdefault(key, row)
                self._buf = batch
                self._since = since
            raise
        return len(batch)

    def __enter__(self) -> StepWriter:
        return self

    def __exit__(self, *_: object) -> None:
        # Steps reported before an error are still good data: write them either way.
        self.flush()


def last_step(engine: Engine, job_id: int, trial_key: str = "") -> int | None:
    """The highest step recorded for the job (or trial), None if none."""
    stmt = select(func.max(Step.step)).where(Step.job_id == job_id, Step.trial_key == trial_key)
    with engine.connect() as conn:
        return conn.execute(stmt).scalar()


def read_steps(
    engine: Engine,
    job_id: int,
    trial_key: str = "",
    *,
    start: int | None = None,
    stop: int | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Steps in step order as {step, metrics, recorded_at}, streamed from the database.
    `start` is inclusive and `stop` exclusive, as in `range`."""
    stmt = (
        select(Step.step, Step.metrics, Step.recorded_at)
        .where(Step.job_id == job_id, Step.trial_key == trial_key)
        .order_by(Step.step)
    )
    if start is not None:
        stmt = stmt.where(Step.step >= start)
    if stop is not None:
        stmt = stmt.where(Step.step < stop)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=READ_BATCH).execute(stmt)
        for step, metrics, recorded_at in result:
            yield {"step": step, "metrics": metrics, "recorded_at": recorded_at}


@dataclass(frozen=True)
class CurvePoint:
    """One bucket of a down-sampled curve: its steps' range and the metric's statistics."""

    first_step: int
    last_step: int
    min: float
    max: float
    mean: float
    count: int


def _is_number(engine: Engine, metric: str) -> Any:
    """SQL: the step's metric is a JSON number."""
    if engine.dialect.name == "postgresql":
        return func.jsonb_typeof(Step.metrics[metric]) == "number"
    return func.json_type(Step.metrics, f'$."{metric}"').in_(("integer", "real"))


def _int(value: int) -> Any:
    return literal_column(str(int(value)), BigInteger)


def _curve(
    conn: Connection, job_id: int, trial_key: str, metric: str, buckets: int, *, checked: bool
) -> list[CurvePoint] | None:
    """The curve's points, None if it has no steps. Unless `checked`, values are cast
    without looking at their JSON type first (cheaper; raises on a non-number)."""
    where = [Step.job_id == job_id, Step.trial_key == trial_key]
    # First and last step as two index probes, written so that no planner estimate can
    # turn them into aggregating every step.
    first = select(Step.step).where(*where).order_by(Step.step).limit(1).scalar_subquery()
    last = select(Step.step).where(*where).order_by(Step.step.desc()).limit(1).scalar_subquery()
    lo, hi = conn.execute(select(first, last)).one()
    if lo is None:
        return None
    if checked:
        where.append(_is_number(conn.engine, metric))
    # OFFSET 0 keeps PostgreSQL from inlining the subquery, which would extract the
    # metric from the JSON once per aggregate instead of once per row.
    values = (
        select(Step.step.label("step"), Step.metrics[metric].as_float().label("v"))
        .where(*where)
        .offset(0)
        .subquery()
    )
    step, v = values.c.step, values.c.v
    width = hi - lo + 1
    # Integers inlined, not bound: PostgreSQL must see one and the same GROUP BY term.
    if width <= buckets:
        bucket: Any = step
    elif (width - 1) * buckets <= MAX_STEP:
        bucket = (step - _int(lo)) * _int(buckets) // _int(width)
    else:  # (step - lo) * buckets would overflow a BIGINT: fixed-width buckets
        bucket = (step - _int(lo)) // _int(-(-width // buckets))
    stmt = (
        # sum, not avg: PostgreSQL's avg(float8) also sums squares (over a million steps here:
        # 1.1 s with avg, 0.6 s with sum).
        select(func.min(step), func.max(step), func.min(v), func.max(v), func.sum(v), func.count())
        .where(v.is_not(None))
        .group_by(bucket)
        .order_by(func.min(step))
    )
    points = [
        CurvePoint(a, b, float(lo_v), float(hi_v), total / count, count)
        for a, b, lo_v, hi_v, total, count in conn.execute(stmt)
    ]
    n = sum(p.count for p in points)
    if n <= buckets and len(points) < n:
        # Few steps have the metric but some shared a bucket: give each its own point.
        stmt = select(step, v).where(v.is_not(None)).order_by(step)
        points = [CurvePoint(s, s, float(x), float(x), float(x), 1) for s, x in conn.execute(stmt)]
    return points


def curve(
    engine: Engine, job_id: int, metric: str, trial_key: str = "", *, buckets: int = 1000
) -> list[CurvePoint]:
    """The metric's curve over steps, down-sampled in the database to at most `buckets`
    points: the step range is split into `buckets` equal ranges, each giving its first
    and last step and the metric's min, max, mean and count. Steps without the metric
    (or where it is null or not a number) are skipped. When at most `buckets` steps have
    the metric, every one is its own point (exact)."""
    check_metric_name(metric)
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            # SQLite casts any text to a number silently: always check JSON types.
            return _curve(conn, job_id, trial_key, metric, buckets, checked=True) or []
        # The job's steps are usually newer than the table's statistics, so the planner
        # expects a handful of rows and would sort a million to group them; hashing
        # 'buckets' groups needs no sort.
        conn.execute(text("SET LOCAL enable_sort = off"))
        try:
            with conn.begin_nested():
                return _curve(conn, job_id, trial_key, metric, buckets, checked=False) or []
        except DataError:
            # A value that is not a number (a string, a bool): check every value's type,
            # at some cost, and skip those.
            return _curve(conn, job_id, trial_key, metric, buckets, checked=True) or []


def trial_keys_with_steps(engine: Engine, job_id: int) -> list[str]:
    """The trial keys that have steps in this job, sorted ("" for the job's own)."""
    # A loose index scan over the (job_id, trial_key, step) index: one probe per key
    # instead of reading every step.
    stmt = text(
        "WITH RECURSIVE k(key) AS ("
        " SELECT MIN(trial_key) FROM steps WHERE job_id = :job"
        " UNION ALL"
        " SELECT (SELECT MIN(trial_key) FROM steps WHERE job_id = :job AND trial_key > k.key)"
        " FROM k WHERE k.key IS NOT NULL"
        ") SELECT key FROM k WHERE key IS NOT NULL"
    )
    with engine.connect() as conn:
        return list(conn.execute(stmt, {"job": job_id}).scalars())
