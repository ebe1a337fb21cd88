"""Speedups: per workload, pipelined vs unpipelined vs baselines, with geometric means."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.registry import Page
from tunelab.units import fmt_seconds
from tunelab.workers.pipeline_search.dashboard import queries as kind_queries

PAGE = Page(
    title="Speedups",
    url_path="speedups",
    icon=":material/speed:",
    kinds=("pipeline-search",),
    order=40,
)


def jobs_text(r: kind_queries.SpeedupRow) -> str:
    return ", ".join(map(str, r.job_ids or (r.job_id,)))


def row_label(r: kind_queries.SpeedupRow) -> str:
    many = len(r.job_ids) > 1
    return f"{r.workload}<br>{r.device} (job{'s' if many else ''} {jobs_text(r)})"


def baselines_of(rows: list[kind_queries.SpeedupRow]) -> list[str]:
    return sorted({b for r in rows for b in r.baselines})


def latency_figure(rows: list[kind_queries.SpeedupRow]) -> go.Figure:
    """Grouped bars: the best latency of each variant per workload and device, relative
    to that workload's unpipelined best (so workloads of any size share one axis)."""
    x = [row_label(r) for r in rows]
    variants: list[tuple[str, list[float | None]]] = [
        ("unpipelined", [r.unpipelined_s for r in rows]),
        ("pipelined", [r.pipelined_s for r in rows]),
    ]
    variants += [(b, [r.baselines.get(b) for r in rows]) for b in baselines_of(rows)]
    fig = go.Figure()
    for name, values in variants:
        rel = [
            (v / r.unpipelined_s) if v is not None and r.unpipelined_s else None
            for v, r in zip(values, rows, strict=True)
        ]
        fig.add_trace(
            go.Bar(
                x=x, y=rel, name=name,
                text=[None if v is None else fmt_seconds(v) for v in values],
                textposition="outside",
            )
        )  # fmt: skip
    fig.update_layout(
        barmode="group",
        yaxis_title="latency relative to unpipelined (lower is better)",
        margin={"t": 30},
        height=420,
    )
    return fig


def render(engine: Engine) -> None:
    """The page."""
    st.title("Speedups")
    jobs, _ = queries.list_jobs(engine, kinds=PAGE.kinds, limit=500)
    if not jobs:
        common.no_jobs()
        return
    by_id = {j.id: j for j in jobs}
    chosen = st.multiselect(
        "Jobs", list(by_id), default=list(by_id)[:20], format_func=lambda i: by_id[i].label,
        key="jobs",
    )  # fmt: skip
    rows = kind_queries.by_workload(kind_queries.speedups(engine, chosen))
    if not rows:
        st.info("None of these jobs has an ok trial yet: nothing to compare.")
        return
    speedup = queries.geomean([r.speedup for r in rows])
    baselines = baselines_of(rows)
    cols = st.columns(1 + len(baselines))
    cols[0].metric(
        "geomean speedup, pipelined vs unpipelined",
        f"{speedup:.3f}x" if speedup else "-",
        help="Geometric mean over the workloads below (each the best of its selected "
        "jobs) of unpipelined best / pipelined best.",
    )
    for col, b in zip(cols[1:], baselines, strict=True):
        g = queries.geomean([r.vs_baseline(b) for r in rows])
        col.metric(f"geomean speedup vs {b}", f"{g:.3f}x" if g else "-",
                   help=f"{b} latency / best tuned latency, over the workloads that have "
                        f"{b}.")  # fmt: skip
    st.plotly_chart(latency_figure(rows), width="stretch", key="bars")
    st.dataframe(
        [
            {
                "workload": r.workload, "device": r.device, "jobs": jobs_text(r),
                "pipelined_ms": r.pipelined_s * 1e3 if r.pipelined_s else None,
                "unpipelined_ms": r.unpipelined_s * 1e3 if r.unpipelined_s else None,
                **{f"{b}_ms": r.baselines[b] * 1e3 if b in r.baselines else None
                   for b in baselines},
                "speedup": r.speedup,
            }
            for r in rows
        ],
        hide_index=True,
        width="stretch",
    )  # fmt: skip
    st.caption(
        f"One row per workload and device: the best ok trial of each variant over the "
        f"selected jobs of that workload (a sweep replayed several times counts once). "
        f"{kind_queries.PIPELINED.capitalize()}; unpipelined: otherwise. Baselines: ok "
        'trials recording `extra.baseline` (e.g. `{"baseline": "torch"}`), best per name. '
        "Device: the GPU, else CPU, model of the environment the job's best trial ran in."
    )


if __name__ == "__main__":
    common.run(render)
