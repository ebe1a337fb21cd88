"""Performance model: predicted against measured cost, rank correlation, top-k recall,
MAPE, how they change as the model retrains, and trials needed to reach 99% of best."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.registry import Page

RHO = "\u03c1"  # Greek rho, for Spearman's rho

PAGE = Page(title="Performance model", url_path="model", icon=":material/insights:", order=30)


def scatter_figure(pairs: list[tuple[float, float]]) -> go.Figure:
    """Predicted against measured (ms), log-log, with the ideal line y = x."""
    xs = [m * 1e3 for _, m in pairs]
    ys = [p * 1e3 for p, _ in pairs]
    lo, hi = min(xs + ys), max(xs + ys)
    fig = go.Figure(
        [
            go.Scatter(x=xs, y=ys, mode="markers", name="trials", marker={"size": 5,
                       "opacity": 0.6}),
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="ideal (predicted = measured)",
                       line={"dash": "dash", "color": "grey"}),
        ]
    )  # fmt: skip
    fig.update_xaxes(type="log", title="measured latency (ms)")
    fig.update_yaxes(type="log", title="predicted cost (ms)")
    fig.update_layout(margin={"t": 30}, height=420)
    return fig


def windows_figure(report: queries.ModelReport) -> go.Figure:
    """Spearman and top-k recall per model version / window (MAPE on a second axis)."""
    labels = [w.label for w in report.windows]
    fig = go.Figure(
        [
            go.Scatter(x=labels, y=[w.spearman for w in report.windows], name=f"Spearman {RHO}",
                       mode="lines+markers"),
            go.Scatter(x=labels, y=[w.topk_recall for w in report.windows], name="top-k recall",
                       mode="lines+markers"),
            go.Scatter(x=labels, y=[w.mape_pct for w in report.windows], name="MAPE (%)",
                       mode="lines+markers", yaxis="y2", line={"dash": "dot"}),
        ]
    )  # fmt: skip
    fig.update_layout(
        xaxis_title=report.by,
        yaxis={"title": f"{RHO}, recall", "range": [-1.05, 1.05]},
        yaxis2={"title": "MAPE (%)", "overlaying": "y", "side": "right", "rangemode": "tozero"},
        margin={"t": 30},
        height=360,
    )
    return fig


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def render(engine: Engine) -> None:
    """The page."""
    st.title("Performance model")
    job = common.pick_one_job(engine)
    if job is None:
        return
    curves = queries.best_so_far(engine, [job.id])
    reach = queries.trials_to_reach(curves[job.id])
    st.metric(
        "trials to reach 99% of the best",
        f"{reach} of {job.n_done}" if reach is not None else "no ok trial yet",
        help="Trials recorded before the best-so-far latency came within 1% of the job's best.",
    )
    k = int(st.number_input("k for top-k recall", 1, 1000, 10, key="k"))
    report = queries.model_report(engine, job.id, k=k)
    if report.overall is None:
        st.info(
            "No predictions recorded yet for this job: no ok trial has a `predicted_cost`. "
            "Jobs searched with a cost-model strategy record one per trial; the accuracy "
            "metrics and the predicted-vs-measured plot will appear here then."
        )
        return
    m = report.overall
    if report.sample_step > 1:
        st.caption(
            f"Spearman {RHO} and the per-window metrics are computed on every "
            f"{report.sample_step}th of the {m.n} trials (by id); n, top-{k} recall and "
            "MAPE over the whole job are exact."
        )
    cols = st.columns(4)
    cols[0].metric("trials with a prediction", m.n)
    cols[1].metric(f"Spearman {RHO}", _fmt(m.spearman, ".3f"))
    cols[2].metric(f"top-{k} recall", _fmt(m.topk_recall, ".2f"))
    cols[3].metric("MAPE", _fmt(m.mape_pct, ".1f") + " %")
    left, right = st.columns(2)
    with left:
        st.markdown("#### Predicted against measured")
        pairs = queries.prediction_sample(engine, job.id, n=m.n)
        st.plotly_chart(scatter_figure(pairs), width="stretch", key="scatter")
        if len(pairs) < m.n:
            st.caption(f"{len(pairs)} of {m.n} trials plotted, evenly spread over the job.")
    with right:
        st.markdown(f"#### As the model retrains (per {report.by})")
        st.plotly_chart(windows_figure(report), width="stretch", key="windows")
        st.dataframe(
            [
                {"window": w.label, "trials": f"{w.first_trial}-{w.last_trial}", "n": w.n,
                 "spearman": w.spearman, f"top-{k} recall": w.topk_recall, "mape_pct": w.mape_pct}
                for w in report.windows
            ],
            hide_index=True,
            width="stretch",
        )  # fmt: skip
    st.caption(
        f"Spearman {RHO}: rank correlation of predicted and measured latency (ties averaged). "
        f"Top-{k} recall: of the {k} fastest measured trials, the share that are among the "
        f"{k} predicted fastest. MAPE: mean |predicted - measured| / measured, which assumes "
        "predicted_cost is in seconds. Windows: the trials' `model_version` when they record it, "
        "else equal slices of the job in recording order (trial ids shown)."
    )


if __name__ == "__main__":
    common.run(render)
