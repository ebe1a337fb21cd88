"""Trials as the Trials page lists them: filtered, paged, one in detail, and as CSV."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from tunelab.platform.rows import column_union, write_csv
from tunelab.schema.models import Environment, Trial


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


# Params last: flat rows spread them into `p.NAME` columns after the others.
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
