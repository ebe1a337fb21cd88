"""Speedups: per workload, pipelined vs unpipelined vs baselines, with geometric means."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries, style
from tunelab.dashboard.registry import Page
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


# More rows than this: horizontal bars (workload labels read along the axis, never
# rotated over each other).
MAX_VERTICAL = 4


def latency_figure(rows: list[kind_queries.SpeedupRow]) -> go.Figure:
    """Grouped bars: the best latency of each variant per workload and device, relative
    to that workload's unpipelined best (so workloads of any size share one axis);
    horizontal when there are many workloads."""
    labels = [row_label(r) for r in rows]
    variants: list[tuple[str, list[float | None]]] = [
        ("unpipelined", [r.unpipelined_s for r in rows]),
        ("pipelined", [r.pipelined_s for r in rows]),
    ]
    variants += [(b, [r.baselines.get(b) for r in rows]) for b in baselines_of(rows)]
    horizontal = len(rows) > MAX_VERTICAL
    fig = go.Figure()
    for name, values in variants:
        rel = [
            (v / r.unpipelined_s) if v is not None and r.unpipelined_s else None
            for v, r in zip(values, rows, strict=True)
        ]
        text = [style.fmt_latency(v) for v in values]
        fig.add_trace(
            go.Bar(x=rel, y=labels, orientation="h", name=name, text=text, textposition="auto")
            if horizontal
            else go.Bar(x=labels, y=rel, name=name, text=text, textposition="outside")
        )
    axis = "latency relative to unpipelined (lower is better)"
    fig.update_layout(barmode="group")
    if horizontal:
        fig.update_layout(xaxis_title=axis, yaxis={"autorange": "reversed"})
        return style.finish(fig, height=120 + 28 * len(rows) * len(variants))
    fig.update_layout(yaxis_title=axis)
    return style.finish(fig, height=420)


def table_rows(rows: list[kind_queries.SpeedupRow]) -> list[dict]:
    """The table: latencies in ms/µs (4 significant figures), blank where missing."""
    baselines = baselines_of(rows)
    return [
        {
            "workload": r.workload, "device": r.device, "jobs": jobs_text(r),
            "pipelined": style.fmt_latency(r.pipelined_s),
            "unpipelined": style.fmt_latency(r.unpipelined_s),
            "speed-up": common.fmt_ratio(r.speedup),
            **{b: style.fmt_latency(r.baselines.get(b)) for b in baselines},
            **{f"vs {b}": common.fmt_ratio(r.vs_baseline(b)) for b in baselines},
        }
        for r in rows
    ]  # fmt: skip


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
    every = common.refresh_every([by_id[i] for i in chosen])

    @st.fragment(run_every=every)
    def body() -> None:
        if every is not None:
            common.stop_when_done(every, [queries.get_job(engine, i) or by_id[i] for i in chosen])
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
            table_rows(rows),
            hide_index=True,
            width="stretch",
            column_config=common.wide_columns(
                {"workload": 220, "device": 160, "jobs": 90, "pipelined": 90,
                 "unpipelined": 95, "speed-up": 80}
            ),
        )  # fmt: skip
        st.caption(
            f"One row per workload and device: the best ok trial of each variant over the "
            f"selected jobs of that workload (a sweep replayed several times counts once). "
            f"{kind_queries.PIPELINED.capitalize()}; unpipelined: otherwise. Speed-up: "
            "unpipelined ÷ pipelined; vs a baseline: its latency ÷ the best tuned one. "
            'Baselines: ok trials recording `extra.baseline` (e.g. `{"baseline": "torch"}`), '
            "best per name. Device: the GPU, else CPU, model of the environment the job's "
            "best trial ran in." + (f" Refreshing every {every:g} s." if every else "")
        )

    body()


if __name__ == "__main__":
    common.run(render)
