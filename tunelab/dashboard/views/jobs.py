"""Jobs: every job, what won first (status, best, best parameters, a link to it), then
its workload, progress, strategy and age."""

from __future__ import annotations

import math

import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.registry import Page
from tunelab.units import fmt_age

PAGE = Page(title="Jobs", url_path="jobs", icon=":material/list:", order=10, default=True)
PAGE_SIZE = 50

# Shown in this order; the first five fit in 1400 px with room to spare.
WIDTHS: dict[str, int | str] = {
    "status": 140, "best": 85, "best params": 330, "open": 60, "job": 210, "workload": 200,
    "trials": 90, "progress": 90, "ok": 55, "failed": 55, "strategy": 90, "kind": 110,
    "target": 120, "objective": 120, "created": 80, "id": 50,
}  # fmt: skip


def table_rows(jobs: list[queries.JobRow]) -> list[dict]:
    """The Jobs table as plain rows (what the page shows, one dict per job, in column
    order); empty cells are blank."""
    return [
        {
            "status": j.status,
            "best": common.fmt_objective(j.best_value, j.objective),
            "best params": common.cell_params(j.best_params),
            "open": f"job?job={j.id}",
            "job": j.name,
            "workload": j.workload,
            "trials": j.trials_text,
            "progress": j.progress,
            "ok": j.n_ok,
            "failed": j.n_failed,
            "strategy": "" if j.strategy == "-" else j.strategy,
            "kind": j.kind,
            "target": j.target,
            "objective": f"{j.objective} ({j.direction[:3]})",
            "created": fmt_age(j.created_at),
            "id": j.id,
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

    def page_jobs() -> tuple[list[queries.JobRow], int]:
        return queries.list_jobs(
            engine, kinds=kind_sel, statuses=status_sel, limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )  # fmt: skip

    shown, _ = page_jobs()
    every = common.refresh_every(shown)  # while a job on this page is pending or running

    @st.fragment(run_every=every)
    def jobs_table() -> None:
        jobs, n = page_jobs()
        common.stop_when_done(every, jobs)
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
                **common.wide_columns(WIDTHS),
                "progress": st.column_config.ProgressColumn(
                    "progress", min_value=0, max_value=1, width=WIDTHS["progress"]
                ),
                "open": st.column_config.LinkColumn(
                    "open", display_text="details", width=WIDTHS["open"]
                ),
                "best": st.column_config.TextColumn(
                    "best",
                    width=WIDTHS["best"],
                    help="The best value of the job's primary objective (latency: the "
                    "median repeat, in ms or µs).",
                ),
            },
        )

    jobs_table()


if __name__ == "__main__":
    common.run(render)
