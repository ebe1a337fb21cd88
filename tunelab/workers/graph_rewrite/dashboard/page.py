"""Graph rewriting: learning curves of RL jobs, the best graph's measured speedup over
the original for each search side by side per model, and the best rewrite sequence."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries, style
from tunelab.dashboard.registry import Page
from tunelab.platform.steps import CurvePoint
from tunelab.units import fmt_seconds
from tunelab.workers.graph_rewrite.dashboard import queries as gq

PAGE = Page(
    title="Graph rewriting",
    url_path="graph-rewriting",
    icon=":material/account_tree:",
    kinds=(gq.KIND,),
    order=45,
)


# More models than this: horizontal bars (model names never rotated over each other).
MAX_VERTICAL = 4
METRICS = ["mean_return", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"]


def speedup_figure(rows: list[gq.SearchBest]) -> go.Figure:
    """Grouped bars: per model, the best measured speedup of each search (horizontal when
    there are many models), against a dotted line at 1 (the original graph)."""
    models = list(dict.fromkeys(r.model for r in rows))
    horizontal = len(models) > MAX_VERTICAL
    fig = go.Figure()
    for search in sorted({r.search for r in rows}):
        mine = [r for r in rows if r.search == search]
        bars = {
            "name": search,
            "text": [common.fmt_ratio(r.speedup) for r in mine],
            "hovertext": [hover(r) for r in mine],
        }
        # The 95% interval as error bars (none where a row has no interval).
        error = {"type": "data", "symmetric": False, "visible": any(r.ci for r in mine),
                 "array": [r.ci[1] - r.speedup if r.ci else 0 for r in mine],
                 "arrayminus": [r.speedup - r.ci[0] if r.ci else 0 for r in mine]}  # fmt: skip
        if horizontal:
            bars |= {"y": [r.model for r in mine], "x": [r.speedup for r in mine],
                     "orientation": "h", "textposition": "auto", "error_x": error}  # fmt: skip
        else:
            bars |= {"x": [r.model for r in mine], "y": [r.speedup for r in mine],
                     "textposition": "outside", "error_y": error}  # fmt: skip
        fig.add_trace(go.Bar(**bars))
    title = "speedup over the original graph (measured, higher is better)"
    fig.update_layout(barmode="group")
    if horizontal:
        fig.add_vline(x=1.0, line_dash="dot", annotation_text="original")
        fig.update_layout(xaxis_title=title, yaxis={"autorange": "reversed"})
        n = len({r.search for r in rows})
        return style.finish(fig, height=120 + 26 * len(models) * n)
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="original")
    fig.update_layout(yaxis_title=title)
    return style.finish(fig, height=420)


def curve_figure(curves: dict[str, list[CurvePoint]], metric: str) -> go.Figure:
    """One line per job (or evaluated model): the mean of `metric` per point against the
    update, linear axes; where a point summarises several updates, a band from their
    min to their max."""
    fig = go.Figure()
    for i, (name, points) in enumerate(curves.items()):
        colour = style.PALETTE[i % len(style.PALETTE)]
        x = [(p.first_step + p.last_step) / 2 for p in points]
        if any(p.count > 1 for p in points):
            fig.add_trace(
                go.Scatter(
                    x=x + x[::-1],
                    y=[p.max for p in points] + [p.min for p in points][::-1],
                    fill="toself", fillcolor=colour, opacity=0.2, line={"width": 0},
                    hoverinfo="skip", showlegend=False, name=f"{name} (min-max)",
                )
            )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p.mean for p in points],
                mode="lines" if len(points) > 60 else "lines+markers",
                line={"color": colour},
                name=name,
                hovertemplate=f"update %{{x}}: %{{y:.4g}}<extra>{name}</extra>",
            )
        )
    fig.update_layout(xaxis_title="update (policy version)", yaxis_title=metric)
    return style.finish(fig, height=360)


def summarised(curves: dict[str, list[CurvePoint]]) -> str | None:
    """A caption when some curve's points stand for several updates each."""
    big = {name: sum(p.count for p in pts) for name, pts in curves.items()
           if any(p.count > 1 for p in pts)}  # fmt: skip
    if not big:
        return None
    parts = [f"{name}'s {n:,} updates in {len(curves[name])} points" for name, n in big.items()]
    return (
        f"Down-sampled in the database: {', '.join(parts)}; the line is each point's mean, "
        "the band its min to max."
    )


def hover(r: gq.SearchBest) -> str:
    """A bar's hover text: the job, how the speedup was measured, its interval."""
    how = "final rounds' winner" if r.final else "the best trial's own timing"
    ci = f", 95% CI {common.fmt_interval(r.ci)}" if r.ci else ""
    return f"job {r.job_id}, {r.trials} trials; {how}{ci}" + (f", {r.verdict}" if r.verdict else "")


def speedup_text(r: gq.SearchBest) -> str:
    """`1.12x (95% CI 0.98-1.31, tied)`; just `1.12x` without an interval."""
    said = [f"95% CI {common.fmt_interval(r.ci)}"] if r.ci else []
    said += [r.verdict] if r.verdict else []
    return common.fmt_ratio(r.speedup) + (f" ({', '.join(said)})" if said else "")


def table_rows(rows: list[gq.SearchBest]) -> list[dict]:
    """The best graph of each search, with human column names and formatted numbers."""
    return [
        {
            "model": r.model, "search": r.search,
            "speed-up": speedup_text(r),
            "model speed-up": common.fmt_ratio(r.model_speedup),
            "trials": r.trials, "search time": fmt_seconds(r.search_s),
            "best trial": r.trial_id,  # none: the original graph won the final rounds
            "measured by": "final rounds" if r.final else "its trial", "job": r.job_id,
        }
        for r in rows
    ]  # fmt: skip


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
    every = common.refresh_every([by_id[i] for i in chosen])

    @st.fragment(run_every=every)
    def body() -> None:
        if every is not None:
            common.stop_when_done(every, [queries.get_job(engine, i) or by_id[i] for i in chosen])
        rows = gq.best_per_search(engine, chosen)
        if rows:
            st.subheader("Best graph per search")
            st.plotly_chart(speedup_figure(rows), width="stretch", key="speedups")
            st.dataframe(table_rows(rows), hide_index=True, width="stretch")
            st.caption(
                "Speed-up: the original graph's median end-to-end time over the found "
                "graph's, timed on the same worker in paired rounds (order shuffled each "
                "round), with its 95% interval (paired bootstrap over rounds) and verdict: "
                "faster only when the interval excludes 1 and the gap is over 1%. Where a "
                "job had final rounds, its best is their winner, re-timed against the "
                "original (the original itself when no graph is faster), not the largest "
                "single measurement. Model speed-up: the same ratio by TASO's cost model "
                "(sum of per-operator runtimes)."
                + (f" Refreshing every {every:g} s." if every else "")
            )
            best = max(rows, key=lambda r: r.speedup)
            ci = f", 95% CI {common.fmt_interval(best.ci)}" if best.ci else ""
            st.subheader(
                f"Rewrites of the best graph ({best.search}, {best.model}, "
                f"{common.fmt_ratio(best.speedup)}{ci})"
            )
            st.dataframe(gq.rewrite_sequence(engine, best.trial_id), hide_index=True)
        else:
            st.info("None of these jobs has an ok trial yet.")
        metric = st.session_state.get("metric", METRICS[0])
        curves = {f"job {j}": gq.learning_curve(engine, j, metric) for j in chosen}
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            st.subheader("Learning curves")
            st.selectbox("Metric", METRICS, key="metric")
            st.plotly_chart(curve_figure(curves, metric), width="stretch", key="lc")
            if note := summarised(curves):
                st.caption(note)
            evals = {
                f"job {j} on {m}": pts
                for j in chosen
                for m, pts in gq.eval_curves(engine, j).items()
            }
            if evals:
                st.plotly_chart(curve_figure(evals, "speedup"), width="stretch", key="evals")
                st.caption(
                    "The deterministic policy evaluated every few updates on the "
                    "training model and held-out ones (measured speedup)."
                )

    body()


if __name__ == "__main__":
    common.run(render)
