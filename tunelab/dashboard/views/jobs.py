"""Jobs: every job with kind, status, progress, best result so far and age."""

from __future__ import annotations

import math

import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.registry import Page
from tunelab.units import fmt_age, fmt_value

PAGE = Page(title="Jobs", url_path="jobs", icon=":material/list:", order=10, default=True)
PAGE_SIZE = 50


def table_rows(jobs: list[queries.JobRow]) -> list[dict]:
    """The Jobs table as plain rows (what the page shows, one dict per job)."""
    return [
        {
            "id": j.id,
            "name": j.name,
            "kind": j.kind,
            "target": j.target,
            "workload": j.workload,
            "strategy": j.strategy,
            "status": j.status,
            "progress": (j.n_done / j.n_planned) if j.n_planned else (1.0 if j.n_done else 0.0),
            "trials": f"{j.n_done}/{j.n_planned}",
            "ok": j.n_ok,
            "failed": j.n_failed,
            "best_ms": j.best_latency_s * 1e3 if j.best_latency_s is not None else None,
            "best": fmt_value(j.best_value, j.objective),
            "objective": f"{j.objective} ({j.direction[:3]})",
            "best params": common.params_text(j.best_params) if j.best_params else "-",
            "age": fmt_age(j.created_at),
            "open": f"job?job={j.id}",
        }
        for j in jobs
    ]


def render(engine: Engine) -> None:
    """The page."""
    st.title("Jobs")
    kinds, statuses = queries.job_filters(engine)
    if not kinds:
        common.no_jobs()
        return
    left, right = st.columns(2)
    kind_sel = left.multiselect("Kind", kinds, key="kind")
    status_sel = right.multiselect("Status", statuses, key="status")
    _, total = queries.list_jobs(engine, kinds=kind_sel, statuses=status_sel, limit=0)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="page"))
    # Refresh while a job this view shows is pending or running.
    live_statuses = [s for s in ("pending", "running") if not status_sel or s in status_sel]
    live = (
        bool(live_statuses)
        and queries.list_jobs(engine, kinds=kind_sel, statuses=live_statuses, limit=0)[1] > 0
    )
    every = common.refresh_seconds() if live else None

    @st.fragment(run_every=every)
    def jobs_table() -> None:
        jobs, n = queries.list_jobs(
            engine, kinds=kind_sel, statuses=status_sel, limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )  # fmt: skip
        running = sum(j.status.startswith("running") for j in jobs)
        st.caption(
            f"{n} jobs" + (f", {running} running" if running else "")
            + (f" — refreshing every {every:g} s" if every else "")
        )  # fmt: skip
        if not jobs:
            st.info("No job matches these filters.")
            return
        st.dataframe(
            table_rows(jobs),
            hide_index=True,
            width="stretch",
            column_config={
                "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
                "best_ms": st.column_config.NumberColumn("best (ms)", format="%.4f"),
                "open": st.column_config.LinkColumn("open", display_text="details"),
            },
        )

    jobs_table()


if __name__ == "__main__":
    common.run(render)
