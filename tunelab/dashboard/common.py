"""What every page shares: the read-only engine, error messages instead of tracebacks,
a job picker and parameter formatting."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from tunelab.config import ENV_DB_URL, resolve_db_url
from tunelab.dashboard import queries, style
from tunelab.dashboard.db import SchemaMissing, open_readonly
from tunelab.schema.db import DatabaseError, redact

ENV_REFRESH_S = "TUNELAB_DASHBOARD_REFRESH_S"


def db_url() -> str:
    """The database the dashboard shows (TUNELAB_DB_URL, as `tunelab dashboard` sets it)."""
    return resolve_db_url(os.environ.get(ENV_DB_URL))


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    return open_readonly(url)


def engine_or_stop() -> Engine:
    """The read-only engine, or a clear message and an end to this run."""
    url = db_url()
    try:
        return _engine(url)
    except SchemaMissing as exc:
        st.warning(str(exc), icon=":material/database:")
    except DatabaseError as exc:
        st.error(f"The database cannot be reached. {exc}", icon=":material/cloud_off:")
        st.caption("Check the URL given with `--db` or TUNELAB_DB_URL, and that the server runs.")
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def run(render: Callable[[Engine], None]) -> None:
    """Run a page's `render` with the engine; database errors become a message."""
    engine = engine_or_stop()
    try:
        render(engine)
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        st.error(
            f"The database stopped answering ({redact(db_url())}): {reason}",
            icon=":material/cloud_off:",
        )


def refresh_seconds() -> float:
    """How often pages showing running jobs refresh (TUNELAB_DASHBOARD_REFRESH_S, 5 s)."""
    return float(os.environ.get(ENV_REFRESH_S, "5"))


LIVE_STATUSES = ("pending", "running")


def refresh_every(jobs: Sequence[queries.JobRow]) -> float | None:
    """`run_every` for an `st.fragment` that shows `jobs`: the refresh period while any
    of them is pending or running, else None (no refresh). Every page wraps what it
    draws from those jobs in such a fragment, so it follows a live job."""
    return refresh_seconds() if any(j.status in LIVE_STATUSES for j in jobs) else None


def no_jobs() -> None:
    st.info("No jobs yet: `tunelab submit SPEC` starts one, and it will show up here.")


def pick_jobs(
    engine: Engine,
    *,
    multiple: bool = False,
    kinds: Sequence[str] = (),
    key: str = "job",
    limit: int = 500,
) -> list[queries.JobRow]:
    """A job picker (the newest `limit` jobs). The `?job=ID` query parameter (comma
    separated for several) chooses the initial selection and follows the widget."""
    jobs, _ = queries.list_jobs(engine, kinds=kinds, limit=limit)
    if not jobs:
        return []
    by_id = {j.id: j for j in jobs}
    wanted: list[int] = []
    for part in str(st.query_params.get("job", "")).split(","):
        if part.strip().isdigit() and int(part) in by_id:
            wanted.append(int(part))
    if multiple:
        chosen = st.multiselect(
            "Jobs", list(by_id), default=wanted or [jobs[0].id],
            format_func=lambda i: by_id[i].label, key=key,
        )  # fmt: skip
    else:
        ids = list(by_id)
        first = ids.index(wanted[0]) if wanted else 0
        one = st.selectbox("Job", ids, index=first, format_func=lambda i: by_id[i].label, key=key)
        chosen = [one] if one is not None else []
    st.query_params["job"] = ",".join(str(i) for i in chosen)
    return [by_id[i] for i in chosen]


def pick_one_job(engine: Engine) -> queries.JobRow | None:
    """One job from the picker, or None after saying there are no jobs yet."""
    picked = pick_jobs(engine)
    if not picked:
        no_jobs()
        return None
    return picked[0]


def cell_params(params: dict | None) -> str:
    """`k=v, k=v` for a table cell: blank for none."""
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def params_text(params: dict | None) -> str:
    """`k=v, k=v` for a parameter dict in text: '-' for none."""
    return cell_params(params) or "-"


def fmt_objective(value: float | None, objective: str = "latency_s") -> str:
    """An objective's value for a table cell or metric: a latency in ms/µs for objectives
    in seconds (`*_s`), else a number, 4 significant figures; blank for none."""
    if objective.endswith("_s"):
        return style.fmt_latency(value)
    return style.fmt_number(value)


def fmt_ratio(x: float | None) -> str:
    """`1.163x`; blank for none."""
    return f"{style.fmt_number(x)}x" if x is not None else ""


def fmt_interval(ci: tuple[float, float] | None) -> str:
    """A ratio's interval, `1.12x-1.20x`; blank for none."""
    return f"{fmt_ratio(ci[0])}-{fmt_ratio(ci[1])}" if ci else ""


# A log axis reads well when the data spans a few factors of ten; over a narrow range
# its 1-2-5 ticks leave one label or none, so such an axis stays linear.
LOG_SPREAD = 4.0


def log_axis(values: Sequence[float | None]) -> bool:
    """Whether latencies `values` deserve a log axis (they span LOG_SPREAD or more)."""
    xs = [v for v in values if v is not None and v > 0]
    return bool(xs) and max(xs) / min(xs) >= LOG_SPREAD


def stop_when_done(every: float | None, jobs: Sequence[queries.JobRow]) -> None:
    """In a fragment refreshing every `every` s: once none of `jobs` (as just read) is
    live any more, rerun the whole page, which stops the refresh and shows the end."""
    if every is not None and refresh_every(jobs) is None:
        st.rerun()


def wide_columns(widths: dict[str, int | str]) -> dict[str, Any]:
    """column_config widths (pixels, or small/medium/large) keyed by column name, so the
    columns that matter most fit in 1400 px."""
    return {name: st.column_config.Column(name, width=w) for name, w in widths.items()}
