"""Trials: a filterable, paginated table of trials, one trial's detail, CSV download."""

from __future__ import annotations

import json
import math

import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.registry import Page
from tunelab.schema.models import TrialStatus
from tunelab.units import fmt_seconds

PAGE = Page(title="Trials", url_path="trials", icon=":material/table:", order=50)
PAGE_SIZE = 50
ALL = 0


def parse_params(text: str) -> tuple[tuple[str, str], ...]:
    """`stages=2, tile_m=32` -> (("stages", "2"), ("tile_m", "32")); bad parts ignored."""
    out = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() and value.strip():
            out.append((key.strip(), value.strip()))
    return tuple(out)


def render(engine: Engine) -> None:
    """The page."""
    st.title("Trials")
    jobs, _ = queries.list_jobs(engine, limit=500)
    if not jobs:
        common.no_jobs()
        return
    by_id = {j.id: j for j in jobs}
    wanted = str(st.query_params.get("job", ""))
    ids = [ALL, *by_id]
    first = ids.index(int(wanted)) if wanted.isdigit() and int(wanted) in by_id else 1
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    job_id = c1.selectbox(
        "Job", ids, index=first, key="job",
        format_func=lambda i: "all jobs" if i == ALL else by_id[i].label,
    )  # fmt: skip
    statuses = c2.multiselect("Status", [str(s) for s in TrialStatus], key="status")
    params = c3.text_input("Parameters", placeholder="stages=2, tile_m=32", key="params")
    order = c4.radio("Order", ["id", "latency"], key="order", horizontal=True)
    flt = queries.TrialFilter(
        job_id=None if job_id == ALL else job_id,
        statuses=tuple(statuses),
        params=parse_params(params),
        order=order,
    )
    total = queries.count_trials(engine, flt)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="page"))
    rows = queries.trial_page(engine, flt, page=page - 1, page_size=PAGE_SIZE)
    st.caption(f"{total} trials match; showing {len(rows)} from #{(page - 1) * PAGE_SIZE + 1}.")
    if not rows:
        st.info("No trial matches these filters.")
        return
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.NumberColumn(c, format="%.3e")
            for c in ("latency_median_s", "latency_min_s", "latency_stdev_s", "predicted_cost")
        },
    )
    d1, d2 = st.columns(2)
    d1.download_button(
        "Download this page as CSV",
        queries.rows_to_csv(rows),
        file_name="trials-page.csv",
        mime="text/csv",
        key="csv_page",
    )
    d2.download_button(
        f"Download all {total} matching trials as CSV",
        lambda: "".join(queries.iter_trials_csv(engine, flt)),
        file_name=f"trials-{'all' if job_id == ALL else f'job-{job_id}'}.csv",
        mime="text/csv",
        key="csv_all",
        help="Streamed from the database in chunks when you click.",
    )
    st.markdown("#### Trial detail")
    trial_id = st.selectbox("Trial", [r["id"] for r in rows], key="trial")
    detail = queries.trial_detail(engine, trial_id) if trial_id is not None else None
    if detail is None:
        return
    cols = st.columns(4)
    cols[0].metric("status", detail["status"])
    cols[1].metric("median", fmt_seconds(detail["latency_median_s"]))
    cols[2].metric("predicted", f"{detail['predicted_cost']:.3e}" if detail["predicted_cost"]
                   else "-")  # fmt: skip
    cols[3].metric("attempts", detail["attempts"])
    left, right = st.columns(2)
    with left:
        st.markdown("**Parameters**")
        st.code(json.dumps(detail["params"], indent=2), language="json")
        pipelined = (detail["extra"] or {}).get("pipelined") or []
        st.markdown("**Pipelined buffers**")
        if pipelined:
            st.dataframe(pipelined, hide_index=True, key="pipelined")
        else:
            st.caption("none (stages = 1: nothing pipelined)")
    with right:
        if detail["error"]:
            st.markdown("**Error**")
            st.code(detail["error"], language="text")
        st.markdown("**Measurement**")
        st.dataframe(
            [
                {"field": k, "value": str(detail[k])}
                for k in ("latency_median_s", "latency_mean_s", "latency_stdev_s",
                          "latency_min_s", "n_repeats", "build_s", "run_s", "worker_node",
                          "host", "cpu_model", "gpu_model", "started_at", "finished_at",
                          "candidate")
            ],
            hide_index=True,
            key="measurement",
        )  # fmt: skip
        other = {k: v for k, v in (detail["extra"] or {}).items() if k != "pipelined"}
        if other:
            st.markdown("**Extra**")
            st.code(json.dumps(other, indent=2), language="json")


if __name__ == "__main__":
    common.run(render)
