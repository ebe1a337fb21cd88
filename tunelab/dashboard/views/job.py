"""Job: best-so-far latency against trial number, status breakdown, environment."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.registry import Page
from tunelab.units import fmt_age, fmt_value

PAGE = Page(title="Job", url_path="job", icon=":material/monitoring:", order=20)


def curve_figure(
    curves: dict[int, list[queries.CurvePoint]], jobs: dict[int, queries.JobRow]
) -> go.Figure:
    """One step line per job (labelled with its search strategy): latency in ms for
    timing jobs, else the job's objective."""
    fig = go.Figure()
    objectives = {jobs[j].objective for j, points in curves.items() if points}
    timed = objectives <= {"latency_s"}
    for job_id, points in curves.items():
        if not points:
            continue
        j = jobs[job_id]
        fig.add_trace(
            go.Scatter(
                x=[p.n for p in points],
                y=[p.best * 1e3 if timed else p.best for p in points],
                mode="lines+markers",
                line_shape="hv",
                name=f"job {j.id} · {j.strategy}",
            )
        )
    fig.update_layout(
        xaxis_title="trial number",
        yaxis_title="best-so-far latency (ms)"
        if timed
        else f"best-so-far {' / '.join(sorted(objectives))}",
        legend_title="job · strategy",
        margin={"t": 30},
        height=380,
    )
    return fig


def status_figure(counts: dict[str, int]) -> go.Figure:
    """Trials per status as bars (ok first)."""
    labels = sorted(counts, key=lambda s: (s != "ok", -counts[s]))
    colors = ["#2ca02c" if s == "ok" else "#d62728" for s in labels]
    fig = go.Figure(go.Bar(x=labels, y=[counts[s] for s in labels], marker_color=colors))
    fig.update_layout(yaxis_title="trials", margin={"t": 30}, height=300)
    return fig


def render(engine: Engine) -> None:
    """The page."""
    st.title("Job")
    job = common.pick_one_job(engine)
    if job is None:
        return
    others, _ = queries.list_jobs(engine, limit=500)
    options = [j.id for j in others if j.id != job.id]
    asked = str(st.query_params.get("compare", "")).split(",")
    compare = st.multiselect(
        "Compare with (one line per job and strategy)",
        options,
        default=[i for i in options if str(i) in asked],
        format_func=lambda i: next(j.label for j in others if j.id == i),
        key="compare",
    )
    if compare:
        st.query_params["compare"] = ",".join(map(str, compare))
    elif "compare" in st.query_params:
        del st.query_params["compare"]
    every = common.refresh_seconds() if job.status in ("running", "pending") else None

    @st.fragment(run_every=every)
    def body() -> None:
        j = queries.get_job(engine, job.id) or job
        st.subheader(f"{j.name}")
        st.caption(
            f"job {j.id} · **{j.status}** · {j.kind} · {j.target} · {j.workload} · "
            f"strategy {j.strategy} · created {fmt_age(j.created_at)}"
        )
        counts = queries.status_counts(engine, j.id)
        ids = [j.id, *compare]
        curves = queries.best_so_far(engine, ids)
        reach = queries.trials_to_reach(curves[j.id])
        cols = st.columns(5)
        cols[0].metric("trials", f"{j.n_done}/{j.n_planned}")
        cols[1].metric("ok", counts.get("ok", 0))
        cols[2].metric("failed", sum(n for s, n in counts.items() if s != "ok"))
        cols[3].metric(
            "best" if j.objective == "latency_s" else f"best {j.objective}",
            fmt_value(j.best_value, j.objective),
        )
        cols[4].metric("trials to 99% of best", reach if reach is not None else "-")
        if j.error:
            st.error(f"job error: {j.error}")
        if not counts:
            st.info("This job has no trials yet.")
            return
        if not counts.get("ok"):
            st.warning(
                f"No trial of this job produced a correct measurement: all {sum(counts.values())}"
                " trials failed. The status breakdown and the errors below say how."
            )
        else:
            st.markdown("#### Best-so-far latency")
            jobs = {x.id: x for x in others} | {j.id: j}
            st.plotly_chart(curve_figure(curves, jobs), width="stretch", key="curve")
            if j.best_params:
                st.caption(f"best parameters: {common.params_text(j.best_params)}")
        left, right = st.columns(2)
        with left:
            st.markdown("#### Trials by status")
            st.plotly_chart(status_figure(counts), width="stretch", key="statuses")
            st.dataframe([{"status": s, "trials": n} for s, n in counts.items()], hide_index=True)
        with right:
            st.markdown("#### Environment")
            envs = queries.job_environments(engine, j.id)
            st.dataframe(
                [{k: v for k, v in e.items() if v is not None} for e in envs],
                hide_index=True,
                width="stretch",
            )
            errors = queries.common_errors(engine, j.id)
            if errors:
                st.markdown("#### Most common errors")
                st.dataframe(errors, hide_index=True, width="stretch")

    body()


if __name__ == "__main__":
    common.run(render)
