"""What every page shares: the read-only engine, error messages instead of tracebacks,
a job picker and parameter formatting."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from tunelab.config import ENV_DB_URL, resolve_db_url
from tunelab.dashboard import queries
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


def params_text(params: dict | None) -> str:
    """`k=v, k=v` for a parameter dict."""
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items()) or "-"
