"""Performance model: where a job's predictions come from, predicted against measured
cost, rank correlation, top-k recall and MAPE, how they change as the model retrains
(windows of whole model versions, 32 trials or more), and the trials the search needed
to come within 1% of the best known for its workload."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries, style
from tunelab.dashboard.registry import Page
from tunelab.units import fmt_value

RHO = "\u03c1"  # Greek rho, for Spearman's rho

PAGE = Page(title="Performance model", url_path="model", icon=":material/insights:", order=30)


def scatter_figure(
    pairs: list[tuple[float, float]],
    *,
    height: int = 420,
    bounds: tuple[float, float] | None = None,
    title: str = "",
) -> go.Figure:
    """Predicted against measured latency, log-log, in one unit, with the line y = x.
    `bounds` (seconds): both axes' range and the unit's choice, so that several charts
    compare."""
    middle = [math.sqrt(bounds[0] * bounds[1])] if bounds else [v for x in pairs for v in x]
    unit, scale = style.latency_unit(middle)
    xs = [m * scale for _, m in pairs]
    ys = [p * scale for p, _ in pairs]
    lo, hi = (bounds[0] * scale, bounds[1] * scale) if bounds else (min(xs + ys), max(xs + ys))
    fig = go.Figure(
        [
            go.Scatter(x=xs, y=ys, mode="markers", name="trials",
                       marker={"size": 5, "opacity": 0.6, "color": style.PALETTE[0]}),
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="predicted = measured",
                       line={"dash": "dash", "color": style.PALETTE[7]}),
        ]
    )  # fmt: skip
    fig.update_xaxes(title=f"measured latency ({unit})")
    fig.update_yaxes(title=f"predicted latency ({unit})")
    style.finish(fig, height=height, x_log=True, y_log=True, legend=not title)
    if bounds and lo > 0:
        span = [math.log10(lo) - 0.05, math.log10(hi) + 0.05]  # log axes range in log10
        fig.update_xaxes(range=span)
        fig.update_yaxes(range=span)
    if title:
        fig.update_layout(title={"text": title, "font": {"size": 14}})
    return fig


def windows_figure(report: queries.ModelReport) -> go.Figure:
    """Spearman's rho and top-k recall per window (MAPE on a second axis)."""
    labels = [w.label for w in report.windows]
    fig = go.Figure(
        [
            go.Scatter(x=labels, y=[w.spearman for w in report.windows], name=f"Spearman {RHO}",
                       mode="lines+markers"),
            go.Scatter(x=labels, y=[w.topk_recall for w in report.windows],
                       name=f"top-{report.k} recall", mode="lines+markers"),
            go.Scatter(x=labels, y=[w.mape_pct for w in report.windows], name="MAPE (%)",
                       mode="lines+markers", yaxis="y2", line={"dash": "dot"}),
        ]
    )  # fmt: skip
    fig.update_layout(
        xaxis={"title": report.by + (" (window)" if report.by == "model version" else ""),
               "type": "category"},
        yaxis={"title": f"{RHO}, recall", "range": [-1.05, 1.05]},
        yaxis2={"title": "MAPE (%)", "overlaying": "y", "side": "right", "rangemode": "tozero"},
    )  # fmt: skip
    return style.finish(fig, height=360)


def window_rows(report: queries.ModelReport) -> list[dict[str, object]]:
    """The windows table: human column names, numbers at 3-4 significant figures."""
    return [
        {
            "window": w.label,
            "trial ids": f"{w.first_trial}-{w.last_trial}",
            "n": w.n,
            f"Spearman {RHO}": style.fmt_number(w.spearman, 3),
            f"top-{report.k} recall": style.fmt_number(w.topk_recall, 3),
            "MAPE (%)": style.fmt_number(w.mape_pct, 3),
        }
        for w in report.windows
    ]


def reach_text(reach: int | None, n_done: int, ref: queries.Reference) -> str:
    """'6 of 8', 'not reached in 64', or 'no ok trial yet'."""
    if ref.own_value is None:
        return "no ok trial yet"
    return f"{reach} of {n_done}" if reach is not None else f"not reached in {n_done}"


def reference_caption(ref: queries.Reference, reach: int | None, objective: str) -> str:
    """What "99% of the best" was measured against, and how close the job came."""
    if ref.value is None:
        return ""
    text = (
        f"Trials to 99%: the first trial whose best-so-far came within 1% of "
        f"{fmt_value(ref.value, objective)}, {ref.label}."
    )
    if reach is None:
        share = queries.share_of(ref.own_value, ref.value, ref.maximize)
        if share is not None:
            text += (
                f" This job's best, {fmt_value(ref.own_value, objective)}, is "
                f"{100 * share:.1f}% of it."
            )
    return text


def one_window(report: queries.ModelReport) -> str:
    """Why there is a single window."""
    (w,) = report.windows
    if report.by == "model version" and w.first_version == w.last_version:
        return (
            f"One window: the model did not retrain (version {w.first_version} made every "
            "prediction)."
        )
    return f"One window: fewer than {2 * report.window_size} trials with a prediction."


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def render(engine: Engine) -> None:
    """The page."""
    st.title("Performance model")
    job = common.pick_one_job(engine)
    if job is None:
        return
    k = int(st.number_input("k for top-k recall", 1, 1000, 10, key="k"))

    @st.fragment(run_every=common.refresh_every([job]))
    def body() -> None:
        j = queries.get_job(engine, job.id) or job
        ref = queries.best_reference(engine, j.id)
        reach = queries.reach_trial(engine, j.id, ref.value)
        st.metric(
            "trials to reach 99% of the best",
            reach_text(reach, j.n_done, ref),
            help="Trials recorded before the best-so-far came within 1% of the best known "
            "for this workload, target and device (the caption says which).",
        )
        if caption := reference_caption(ref, reach, j.objective):
            st.caption(caption)
        reason = queries.not_applicable(j.objective, j.direction)
        if reason:
            st.info(f"Cost-model metrics: not applicable: {reason}.")
            return
        report = queries.model_report(engine, j.id, k=k)
        if report.overall is None:
            st.info(
                "No predictions recorded yet for this job: no ok trial has a `predicted_cost`. "
                "Jobs searched with a cost-model strategy record one per trial; the accuracy "
                "metrics and the predicted-vs-measured plot will appear here then."
            )
            return
        m = report.overall
        st.markdown(queries.provenance(j.strategy, report.sources))
        if report.sample_step > 1:
            st.caption(
                f"Spearman {RHO} and the per-window metrics are computed on every "
                f"{report.sample_step}th of the {m.n:,} trials (by id); n, top-{k} recall and "
                "MAPE over the whole job are exact."
            )
        cols = st.columns(4)
        cols[0].metric("trials with a prediction", m.n)
        cols[1].metric(f"Spearman {RHO}", _fmt(m.spearman, ".3f"))
        cols[2].metric(
            f"top-{k} recall",
            _fmt(m.topk_recall, ".2f") if m.topk_recall is not None else "n/a (n ≤ k)",
        )
        cols[3].metric("MAPE", _fmt(m.mape_pct, ".1f") + " %")
        left, right = st.columns(2)
        with left:
            st.markdown("#### Predicted against measured")
            pairs = queries.prediction_sample(engine, j.id, n=m.n)
            st.plotly_chart(scatter_figure(pairs), width="stretch", key="scatter")
            if len(pairs) < m.n:
                st.caption(f"{len(pairs):,} of {m.n:,} trials plotted, evenly spread over the job.")
        with right:
            st.markdown(f"#### As the model retrains (per {report.by})")
            st.plotly_chart(windows_figure(report), width="stretch", key="windows")
            st.dataframe(window_rows(report), hide_index=True, width="stretch")
            if len(report.windows) == 1:
                st.caption(one_window(report))
        unit = (
            f"whole model versions in recording order, merged until each window holds at "
            f"least {report.window_size} trials"
            if report.by == "model version"
            else f"runs of at least {report.window_size} trials in recording order"
        )
        st.caption(
            f"Spearman {RHO}: rank correlation of predicted and measured latency (ties at "
            f"their average rank). Top-{k} recall: the expected share of the {k} fastest "
            f"measured trials that are among the {k} predicted fastest, ties broken at "
            f"random: a trial tied across the {k}-th place counts as the share of the tie "
            f"that fits in the top {k}; the same definition for the whole job and every "
            f"window, undefined (blank) when n ≤ k. MAPE: mean |predicted - measured| / "
            f"measured, which assumes predicted_cost is in seconds. Windows: {unit} "
            f"(at most {queries.MAX_WINDOWS}); n is each window's trial count."
        )

    body()


if __name__ == "__main__":
    common.run(render)
