"""Trials as the Trials page lists them: filtered (parameter ranges in SQL on the JSON
column, on SQLite and PostgreSQL alike), sorted over the whole result, paged, one in
detail, and as CSV."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Float, String, Text, and_, exists, func, literal, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from tunelab.dashboard.queries.common import OK
from tunelab.platform.recorder import measured_busy
from tunelab.platform.rows import column_union, write_csv
from tunelab.schema.models import Environment, Job, Remeasurement, Trial

# --------------------------------------------------------------------------- JSON in SQL


class json_number(FunctionElement[float]):
    """SQL: the parameter `key` of a JSON column as a number, NULL when it is missing or
    not a JSON number (a string such as "NHWC" neither matches a range nor breaks
    PostgreSQL's cast)."""

    type = Float()
    inherit_cache = True
    name = "json_number"


class json_text(FunctionElement[str]):
    """SQL: the parameter `key` of a JSON column as text (a number's JSON text)."""

    type = Text()
    inherit_cache = True
    name = "json_text"


class json_has(FunctionElement[bool]):
    """SQL: whether a JSON object column has the key `key`."""

    type = String()
    inherit_cache = True
    name = "json_has"


def _args(element: FunctionElement[Any], compiler: Any, **kw: Any) -> tuple[str, str]:
    column, key = list(element.clauses)
    return compiler.process(column, **kw), compiler.process(key, **kw)


def _path(key: str) -> str:
    return '$."' + key.replace('"', '""') + '"'


@compiles(json_number, "sqlite")
def _number_sqlite(element: json_number, compiler: Any, **kw: Any) -> str:
    col, path = _args(element, compiler, **kw)
    return (
        f"CASE WHEN json_type({col}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({col}, {path}) END"
    )


@compiles(json_number, "postgresql")
def _number_pg(element: json_number, compiler: Any, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return (
        f"CASE WHEN jsonb_typeof({col} -> {key}) = 'number' "
        f"THEN CAST({col} ->> {key} AS DOUBLE PRECISION) END"
    )


@compiles(json_text, "sqlite")
def _text_sqlite(element: json_text, compiler: Any, **kw: Any) -> str:
    col, path = _args(element, compiler, **kw)
    return f"CAST(json_extract({col}, {path}) AS TEXT)"


@compiles(json_text, "postgresql")
def _text_pg(element: json_text, compiler: Any, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return f"({col} ->> {key})"


@compiles(json_has, "sqlite")
def _has_sqlite(element: json_has, compiler: Any, **kw: Any) -> str:
    col, path = _args(element, compiler, **kw)
    return f"(json_type({col}, {path}) IS NOT NULL)"


@compiles(json_has, "postgresql")
def _has_pg(element: json_has, compiler: Any, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return f"({col} ? {key})"


class json_sort(FunctionElement[Any]):
    """SQL: the parameter `key` as a sort key. SQLite's json_extract orders numbers by
    value before text, in one evaluation per row; PostgreSQL takes the numbers here and
    the text in `json_sort_text`."""

    type = Float()
    inherit_cache = True
    name = "json_sort"


class json_sort_text(FunctionElement[str]):
    """SQL: the second sort key of a parameter: its text on PostgreSQL, NULL on SQLite
    (where `json_sort` orders the text already)."""

    type = Text()
    inherit_cache = True
    name = "json_sort_text"


@compiles(json_sort, "sqlite")
def _sort_sqlite(element: json_sort, compiler: Any, **kw: Any) -> str:
    col, path = _args(element, compiler, **kw)
    return f"json_extract({col}, {path})"


@compiles(json_sort, "postgresql")
def _sort_pg(element: json_sort, compiler: Any, **kw: Any) -> str:
    return _number_pg(element, compiler, **kw)  # type: ignore[arg-type]


@compiles(json_sort_text, "sqlite")
def _sort_text_sqlite(element: json_sort_text, compiler: Any, **kw: Any) -> str:
    return "NULL"


@compiles(json_sort_text, "postgresql")
def _sort_text_pg(element: json_sort_text, compiler: Any, **kw: Any) -> str:
    return _text_pg(element, compiler, **kw)  # type: ignore[arg-type]


class unindexed(FunctionElement[Any]):
    """SQL: a column SQLite must not use an index for (`+column`: a job holding much of
    the table is read faster in one scan than by an index lookup per row; its status
    too, or SQLite skip-scans the index on it); the plain column elsewhere."""

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: Any) -> None:
        self.type = column.type
        super().__init__(column)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(next(iter(element.clauses)), **kw)


@compiles(unindexed)
def _unindexed_other(element: unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(next(iter(element.clauses)), **kw)


class _DialectKey(FunctionElement[str]):
    """A parameter name as the dialect's JSON functions take it: a JSON path on SQLite,
    the bare key on PostgreSQL (both bound as parameters)."""

    type = String()
    inherit_cache = True
    name = "dialect_key"

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(literal(key, String()), literal(_path(key), String()))


@compiles(_DialectKey, "sqlite")
def _dk_sqlite(element: _DialectKey, compiler: Any, **kw: Any) -> str:
    return compiler.process(list(element.clauses)[1], **kw)


@compiles(_DialectKey, "postgresql")
def _dk_pg(element: _DialectKey, compiler: Any, **kw: Any) -> str:
    return compiler.process(next(iter(element.clauses)), **kw)


def param_number(key: str) -> Any:
    """SQL: trial parameter `key` as a number (NULL if missing or not a number)."""
    return json_number(Trial.params, _DialectKey(key))


def param_text(key: str) -> Any:
    """SQL: trial parameter `key` as text."""
    return json_text(Trial.params, _DialectKey(key))


def param_exists(key: str) -> Any:
    """SQL: the trial has parameter `key`."""
    return json_has(Trial.params, _DialectKey(key))


def scan_whole_table(conn: Any, job_id: int | None) -> bool:
    """Whether SQLite should read a job's trials in one table scan rather than through
    the job_id index: when the job holds a sixth or more of all trials, one index lookup
    per row costs more than reading every row (measured: 3.0 s against 0.8 s for a
    600,000-trial job among 1,000,000). PostgreSQL's planner makes this choice itself."""
    if job_id is None or conn.dialect.name != "sqlite":
        return False
    n = conn.execute(select(Job.n_done).where(Job.id == job_id)).scalar() or 0
    top = conn.execute(select(func.max(Trial.id))).scalar() or 0  # ids are dense: ~ the count
    return n * 6 >= top


# --------------------------------------------------------------------------- filters

OPERATORS = (">=", "<=", "!=", "==", "=", ">", "<")
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|!=|==|=|>|<)\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    """One parameter condition: `tile_m>=64`, `stages!=1`, `layout=NHWC`."""

    key: str
    op: str
    value: str

    def number(self) -> float | None:
        try:
            return float(self.value)
        except ValueError:
            return None

    def sql(self) -> Any:
        number = self.number()
        if number is None:  # text: equality only (parse_conditions refuses the rest)
            text = param_text(self.key)
            return text != self.value if self.op == "!=" else text == self.value
        x = param_number(self.key)
        return {
            ">=": x >= number, "<=": x <= number, ">": x > number, "<": x < number,
            "=": x == number, "==": x == number, "!=": x != number,
        }[self.op]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def parse_conditions(text: str) -> tuple[tuple[Condition, ...], list[str]]:
    """`tile_m>=64, stages=2` -> conditions, and the parts that could not be read (said
    back to the user, never silently dropped). Ranges need a number."""
    conditions, problems = [], []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _CONDITION.match(part)
        if m is None:
            problems.append(f"`{part.strip()}` (write name, an operator and a value: tile_m>=64)")
            continue
        c = Condition(m.group(1), m.group(2), m.group(3))
        if c.op not in ("=", "==", "!=") and c.number() is None:
            problems.append(f"`{part.strip()}` ({c.op} needs a number)")
            continue
        conditions.append(c)
    return tuple(conditions), problems


@dataclass(frozen=True)
class TrialFilter:
    """What the Trials page filters and sorts on.

    `params`: conditions on parameters, as `Condition`s or (name, value) pairs (equality).
    `order`: a column of `SORTS` (e.g. `latency_median_s`), `p.NAME` for a parameter,
    or `latency` (the median); NULLs sort last either way, ties by id."""

    job_id: int | None = None
    statuses: tuple[str, ...] = ()
    params: tuple[Condition | tuple[str, str], ...] = ()
    min_latency_s: float | None = None
    max_latency_s: float | None = None
    order: str = "id"
    descending: bool = False

    def conditions(self) -> list[Condition]:
        return [p if isinstance(p, Condition) else Condition(p[0], "=", p[1]) for p in self.params]

    def where(self, *, scan: bool = False) -> list[Any]:
        """The WHERE terms; `scan`: keep SQLite off the job_id index (scan_whole_table)."""
        conds: list[Any] = []
        if self.job_id is not None:
            conds.append((unindexed(Trial.job_id) if scan else Trial.job_id) == self.job_id)
        if self.statuses:
            status = unindexed(Trial.status) if scan else Trial.status
            conds.append(status.in_(list(self.statuses)))
        conds += [c.sql() for c in self.conditions()]
        if self.min_latency_s is not None:
            conds.append(Trial.latency_median_s >= self.min_latency_s)
        if self.max_latency_s is not None:
            conds.append(Trial.latency_median_s <= self.max_latency_s)
        return conds

    def order_by(self) -> list[Any]:
        order = "latency_median_s" if self.order == "latency" else self.order
        if order == "id":
            return [Trial.id.desc() if self.descending else Trial.id]
        if order.startswith("p."):
            key = _DialectKey(order.removeprefix("p."))
            # numbers by value, then text (each key evaluated once per row)
            exprs = [json_sort(Trial.params, key), json_sort_text(Trial.params, key)]
        else:
            exprs = [SORTS[order][1]]
        out = [(x.desc() if self.descending else x.asc()).nulls_last() for x in exprs]
        return [*out, Trial.id]

    def needs_rows(self) -> bool:
        """Whether matching or ordering reads more than SQLite's (job_id, status,
        latency_median_s) index holds."""
        covered = ("id", "latency", "latency_median_s", "status")
        return bool(self.params) or self.order not in covered or self.min_latency_s is not None


# Sortable columns: key -> (label, SQL). `p.NAME` parameters sort too.
SORTS: dict[str, tuple[str, Any]] = {
    "id": ("trial", Trial.id),
    "status": ("status", Trial.status),
    "latency_median_s": ("median latency", Trial.latency_median_s),
    "latency_min_s": ("min latency", Trial.latency_min_s),
    "latency_stdev_s": ("stdev", Trial.latency_stdev_s),
    "value": ("objective", Trial.value),
    "n_repeats": ("repeats", Trial.n_repeats),
    "predicted_cost": ("predicted", Trial.predicted_cost),
    "build_s": ("build time", Trial.build_s),
    "run_s": ("run time", Trial.run_s),
    "attempts": ("attempts", Trial.attempts),
    "worker_node": ("worker", Trial.worker_node),
}

# Params last: flat rows spread them into `p.NAME` columns after the others.
TRIAL_LIST_COLUMNS = (
    Trial.id, Trial.job_id, Trial.status, Trial.latency_median_s, Trial.latency_min_s,
    Trial.latency_stdev_s, Trial.n_repeats, Trial.predicted_cost, Trial.build_s, Trial.run_s,
    Trial.attempts, Trial.worker_node, Trial.params,
)  # fmt: skip
# The page shows a few more: the primary objective (for kinds that do not time), the
# library a baseline trial measured and the node's health (a busy node marks the trial).
PAGE_COLUMNS = (*TRIAL_LIST_COLUMNS[:-1], Trial.value, Trial.baseline,
                measured_busy(Trial.node_health).label("busy_node"), Trial.params)  # fmt: skip


def count_trials(engine: Engine, flt: TrialFilter) -> int:
    """How many trials match `flt`."""
    with engine.connect() as conn:
        scan = bool(flt.params) and scan_whole_table(conn, flt.job_id)
        stmt = select(func.count()).select_from(Trial).where(*flt.where(scan=scan))
        return conn.execute(stmt).scalar_one()


def trial_page(
    engine: Engine, flt: TrialFilter, *, page: int = 0, page_size: int = 50
) -> list[dict[str, Any]]:
    """One page of trials matching `flt` (page 0 first) in `flt`'s order over all of
    them, as flat dicts: the statistics as columns and each parameter as a `p.NAME`
    column.

    In two steps: the page's ids, sorted over every match (only the sort key travels
    through the sort), then those rows."""
    with engine.connect() as conn:
        scan = flt.needs_rows() and scan_whole_table(conn, flt.job_id)
        ids = list(
            conn.execute(
                select(Trial.id)
                .where(*flt.where(scan=scan))
                .order_by(*flt.order_by())
                .limit(page_size)
                .offset(page * page_size)
            ).scalars()
        )
        if not ids:
            return []
        rows = {r.id: r for r in conn.execute(select(*PAGE_COLUMNS).where(Trial.id.in_(ids)))}
    return [_flat(rows[i]) for i in ids]


SAMPLE = 200  # trials whose parameter names stand for a job's (then checked exactly)


def known_params(engine: Engine, job_id: int | None) -> list[str]:
    """Parameter names of a job's trials (all jobs' for None), in order of first use,
    from SAMPLE of them (any SAMPLE: no sort, so it is cheap at any size) and the job's
    best trial."""
    scope = [Trial.job_id == job_id] if job_id is not None else []
    sample = select(Trial.params).where(*scope).limit(SAMPLE)
    with engine.connect() as conn:
        rows = list(conn.execute(sample).scalars())
        if job_id is not None:
            best = select(Trial.params).join(Job, Job.best_trial_id == Trial.id)
            rows += conn.execute(best.where(Job.id == job_id)).scalars().all()
    return column_union(p or {} for p in rows)


def unknown_params(engine: Engine, flt: TrialFilter) -> list[str]:
    """Names in `flt`'s conditions that no trial of its job (or of any job) has. The
    sampled names answer at once; only a name outside them is looked for in every trial."""
    wanted = list(dict.fromkeys(c.key for c in flt.conditions()))
    if not wanted:
        return []
    known = set(known_params(engine, flt.job_id))
    missing = []
    with engine.connect() as conn:
        scan = scan_whole_table(conn, flt.job_id)
        job = unindexed(Trial.job_id) if scan else Trial.job_id
        scope = job == flt.job_id if flt.job_id is not None else true()
        for key in wanted:
            if key in known:
                continue
            found = conn.execute(select(exists().where(and_(scope, param_exists(key))))).scalar()
            if not found:
                missing.append(key)
    return missing


def baseline_trials(conn: Any, job_id: int, *columns: Any) -> Any:
    """SQL: a job's ok library-baseline trials (id, baseline and `columns`), by name."""
    scan = scan_whole_table(conn, job_id)
    job, status = (unindexed(Trial.job_id), unindexed(Trial.status)) if scan else (
        Trial.job_id, Trial.status
    )  # fmt: skip
    return (
        select(Trial.id, Trial.baseline, *columns)
        .where(job == job_id, Trial.baseline.is_not(None), status == OK)
        .order_by(Trial.baseline, Trial.id)
    )


def _flat(r: Any) -> dict[str, Any]:
    """A row of TRIAL_LIST_COLUMNS as a dict, each parameter as a `p.NAME` column."""
    row = dict(r._mapping)
    for k, v in (row.pop("params") or {}).items():
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


@dataclass(frozen=True)
class Repeats:
    """Every timed repeat of one trial (its search measurement, or its final rounds)."""

    trial_id: int
    label: str
    latencies_s: list[float]


def repeats(engine: Engine, trial_id: int, job_id: int) -> list[Repeats]:
    """The repeats to draw beside a trial's detail: the trial's own, its final-round
    re-measurements (pooled), the job's best trial's and each ok library baseline's."""
    with engine.connect() as conn:
        best_id = conn.execute(select(Job.best_trial_id).where(Job.id == job_id)).scalar()
        ids = [trial_id, *([best_id] if best_id not in (None, trial_id) else [])]
        rows = conn.execute(
            select(Trial.id, Trial.baseline, Trial.latencies_s).where(Trial.id.in_(ids))
        ).all()
        bases = conn.execute(baseline_trials(conn, job_id, Trial.latencies_s)).all()
        rounds = conn.execute(
            select(Remeasurement.latencies_s)
            .where(Remeasurement.trial_id == trial_id)
            .order_by(Remeasurement.round)
        ).scalars()
        pooled = [x for r in rounds for x in r or []]
    by_id = {r.id: r for r in rows}
    out = []
    for i in ids:
        r = by_id.get(i)
        if r is not None and r.latencies_s:
            who = f"baseline {r.baseline}" if r.baseline else "best" if i == best_id else "trial"
            out.append(Repeats(i, f"{who} {i}", list(r.latencies_s)))
    if pooled:
        out.append(Repeats(trial_id, f"trial {trial_id}, final rounds", pooled))
    out += [
        Repeats(b.id, f"baseline {b.baseline} {b.id}", list(b.latencies_s))
        for b in bases
        if b.latencies_s and b.id != trial_id
    ]
    return out


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
