"""Graph rewriting: learning curves of RL jobs, the best graph's measured speedup over
the original for each search side by side per model, and the best rewrite sequence."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.registry import Page
from tunelab.workers.graph_rewrite.dashboard import queries as gq

PAGE = Page(
    title="Graph rewriting",
    url_path="graph-rewriting",
    icon=":material/account_tree:",
    kinds=(gq.KIND,),
    order=45,
)


def speedup_figure(rows: list[gq.SearchBest]) -> go.Figure:
    """Grouped bars: per model, the best measured speedup of each search."""
    fig = go.Figure()
    for search in sorted({r.search for r in rows}):
        mine = [r for r in rows if r.search == search]
        fig.add_trace(
            go.Bar(
                x=[r.model for r in mine],
                y=[r.speedup for r in mine],
                name=search,
                text=[f"{r.speedup:.3f}x" for r in mine],
                textposition="outside",
                hovertext=[f"job {r.job_id}, {r.trials} trials" for r in mine],
            )
        )
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="original")
    fig.update_layout(
        barmode="group",
        yaxis_title="speedup over the original graph (measured, higher is better)",
        margin={"t": 30},
        height=420,
    )
    return fig


def curve_figure(curves: dict[str, list[dict]], metric: str, x: str) -> go.Figure:
    fig = go.Figure()
    for name, points in curves.items():
        pts = [p for p in points if p.get(metric) is not None]
        fig.add_trace(
            go.Scatter(
                x=[p.get(x) for p in pts],
                y=[p[metric] for p in pts],
                mode="lines+markers",
                name=name,
            )
        )
    fig.update_layout(xaxis_title=x, yaxis_title=metric, margin={"t": 30}, height=360)
    return fig


def render(engine: Engine) -> None:
    """The page."""
    st.title("Graph rewriting")
    jobs, _ = queries.list_jobs(engine, kinds=PAGE.kinds, limit=500)
    if not jobs:
        common.no_jobs()
        return
    by_id = {j.id: j for j in jobs}
    chosen = st.multiselect(
        "Jobs",
        list(by_id),
        default=list(by_id)[:20],
        format_func=lambda i: by_id[i].label,
        key="jobs",
    )
    rows = gq.best_per_search(engine, chosen)
    if rows:
        st.subheader("Best graph per search")
        st.plotly_chart(speedup_figure(rows), width="stretch", key="speedups")
        st.dataframe([r.__dict__ for r in rows], hide_index=True, width="stretch")
        st.caption(
            "Speedup: the original graph's median end-to-end time over the found "
            "graph's, timed interleaved on the same worker. Model speedup: the same "
            "ratio by TASO's cost model (sum of per-operator runtimes)."
        )
        best = max(rows, key=lambda r: r.speedup)
        st.subheader(
            f"Rewrites of the best graph ({best.search}, {best.model}, {best.speedup:.3f}x)"
        )
        st.dataframe(gq.rewrite_sequence(engine, best.trial_id), hide_index=True)
    else:
        st.info("None of these jobs has an ok trial yet.")
    curves = {f"job {j}": gq.learning_curve(engine, j) for j in chosen}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        st.subheader("Learning curves")
        metric = st.selectbox(
            "Metric",
            ["mean_return", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"],
            key="metric",
        )
        st.plotly_chart(curve_figure(curves, metric, "episodes"), width="stretch", key="lc")
        evals = {
            f"job {j} on {m}": pts for j in chosen for m, pts in gq.eval_curves(engine, j).items()
        }
        if evals:
            st.plotly_chart(curve_figure(evals, "speedup", "update"), width="stretch", key="evals")
            st.caption(
                "The deterministic policy evaluated every few updates on the "
                "training model and held-out ones (measured speedup)."
            )


if __name__ == "__main__":
    common.run(render)
