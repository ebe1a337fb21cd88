"""Job: best-so-far against trial number, the library baselines against the best (ratio
and confidence interval), status breakdown, environment."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries, style
from tunelab.dashboard.queries import jobs as job_queries
from tunelab.dashboard.registry import Page
from tunelab.units import fmt_age

PAGE = Page(title="Job", url_path="job", icon=":material/monitoring:", order=20)

ENV_COLUMNS = {
    "trials": "trials", "host": "host", "cpu_model": "CPU", "gpu_model": "GPU",
    "gpu_driver": "GPU driver", "cuda_version": "CUDA", "tvm_version": "TVM",
    "torch_version": "torch", "python_version": "Python",
}  # fmt: skip


def curve_figure(
    curves: dict[int, list[queries.CurvePoint]],
    jobs: dict[int, queries.JobRow],
    finals: dict[int, queries.FinalBest] | None = None,
) -> go.Figure:
    """One step line per job (labelled with its search strategy) of the search's own
    measurements, and a star at its end for a job whose final rounds decided its best
    (that figure, labelled as such): latency in ms or µs for timing jobs (a log axis when
    it spans a few factors of ten), else the objective."""
    fig = go.Figure()
    finals = {j: f for j, f in (finals or {}).items() if curves.get(j)}
    objectives = {jobs[j].objective for j, points in curves.items() if points}
    timed = objectives <= {"latency_s"}
    values = [p.best for points in curves.values() for p in points]
    values += [f.value for f in finals.values()]
    unit, scale = style.latency_unit(values) if timed else ("", 1.0)
    for job_id, points in curves.items():
        if not points:
            continue
        j = jobs[job_id]
        fig.add_trace(
            go.Scatter(
                x=[p.n for p in points],
                y=[p.best * scale for p in points],
                mode="lines+markers",
                line_shape="hv",
                name=f"job {j.id} · {j.strategy}",
                hovertemplate=f"trial %{{x}}: %{{y:.4g}} {unit}<extra></extra>",
            )
        )
        final = finals.get(job_id)
        if final is not None:
            winner = (
                f"trial {final.trial_id}" if final.trial_id else final.against or "the reference"
            )
            fig.add_trace(
                go.Scatter(
                    x=[points[-1].n],
                    y=[final.value * scale],
                    mode="markers",
                    marker={"symbol": "star", "size": 14},
                    name=f"job {j.id} · final rounds' winner",
                    hovertemplate=f"{winner}, the winner of {final.rounds} final rounds: "
                    f"%{{y:.4g}} {unit}<extra></extra>",
                )
            )
    what = "search median" if timed else " / ".join(sorted(objectives)) + " (search)"
    fig.update_layout(
        xaxis_title="trial number",
        yaxis_title=f"best-so-far {what}" + (f" ({unit})" if timed else ""),
        legend_title="job · strategy",
    )
    return style.finish(fig, y_log=timed and common.log_axis(values))


def final_text(final: queries.FinalBest, objective: str) -> str:
    """What a job's final figure is, and why it differs from the curve's end."""
    winner = f"trial {final.trial_id}" if final.trial_id else final.against or "the reference"
    searched = (
        f" (the search measured it at {common.fmt_objective(final.search_value, objective)})"
        if final.search_value is not None
        else ""
    )
    if final.against:  # a speedup over a reference, with its interval
        ci = f", 95% CI {common.fmt_interval(final.ci)}, {final.outcome}" if final.ci else ""
        return (
            f"{winner}, the winner of {final.rounds} final rounds against {final.against}, "
            f"at {common.fmt_ratio(final.value)}{ci}: the finalists and {final.against} "
            f"re-timed in paired rounds on one worker{searched}. The search timed each "
            "trial once, when it ran: a busy moment makes a trial slower, a lucky one faster."
        )
    return (
        f"{winner}, the winner of {final.rounds} final rounds, at "
        f"{common.fmt_objective(final.value, objective)}: the finalists and baselines "
        f"re-measured in paired rounds on one worker{searched}. The search measured each "
        "trial once, when it ran: a busy moment makes a trial slower, a lucky one faster."
    )


def status_figure(counts: dict[str, int]) -> go.Figure:
    """Trials per status as horizontal bars (ok on top), labels never rotated."""
    labels = sorted(counts, key=lambda s: (s != "ok", -counts[s]))[::-1]
    colors = [style.OK_COLOUR if s == "ok" else style.FAILED_COLOUR for s in labels]
    fig = go.Figure(
        go.Bar(
            y=labels, x=[counts[s] for s in labels], orientation="h", marker_color=colors,
            text=[style.fmt_number(counts[s]) for s in labels], textposition="auto",
        )
    )  # fmt: skip
    fig.update_layout(xaxis_title="trials")
    return style.finish(fig, height=max(160, 60 + 32 * len(labels)), legend=False)


def baseline_rows(rows: list[job_queries.BaselineComparison]) -> list[dict]:
    """The baselines table: latency, the best's, the ratio and its interval, in words."""
    return [
        {
            "baseline": b.name,
            "baseline latency": style.fmt_latency(b.median_s),
            "best latency": style.fmt_latency(b.best_s),
            "speed-up (baseline ÷ best)": common.fmt_ratio(b.ratio),
            "95% CI": common.fmt_interval(b.ci),
            "verdict": {
                "win": "best is faster", "loss": "baseline is faster",
                "undecided": "not separated by the noise",
            }.get(b.outcome, ""),
            "from": b.source,
            "trial": b.trial_id,
        }
        for b in rows
    ]  # fmt: skip


def baselines_section(engine: Engine, job: queries.JobRow) -> None:
    rows = job_queries.baselines(engine, job.id)
    if not rows:
        return
    st.markdown("#### Library baselines")
    first = rows[0]
    cols = st.columns(3)
    cols[0].metric(f"baseline {first.name}", style.fmt_latency(first.median_s))
    cols[1].metric(f"speed-up over {first.name}", common.fmt_ratio(first.ratio),
                   help="Baseline median ÷ the best trial's median: above 1, the best "
                   "found is faster than the library.")  # fmt: skip
    cols[2].metric(
        "95% CI",
        common.fmt_interval(first.ci) or "-",
        help=job_queries.CI_TEXT + ("" if first.ci else ": none, one side has one measurement"),
    )
    st.dataframe(baseline_rows(rows), hide_index=True, width="stretch", key="baselines")
    st.caption(
        f"Speed-up: the baseline's median latency ÷ the best trial's. 95% CI: the "
        f"{job_queries.CI_TEXT.removeprefix('95% ')}, as the final rounds' verdict computes "
        "it (platform/noise.py); from the final rounds' interleaved re-measurements when "
        "the job had them, else from the repeats the search measured. Blank: one side "
        "has a single measurement."
    )


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
    shown = [job, *(j for j in others if j.id in compare)]
    every = common.refresh_every(shown)

    @st.fragment(run_every=every)
    def body() -> None:
        j = queries.get_job(engine, job.id) or job
        common.stop_when_done(every, [j])
        st.subheader(f"{j.name}")
        st.caption(
            f"job {j.id} · **{j.status}** · {j.kind} · {j.target} · {j.workload} · "
            f"strategy {j.strategy} · created {fmt_age(j.created_at)}"
            + (f" · refreshing every {every:g} s" if every else "")
        )
        counts = queries.status_counts(engine, j.id)
        ids = [j.id, *compare]
        curves = queries.best_so_far(engine, ids)
        ref = queries.best_reference(engine, j.id)
        reference, source = ref.value, ref.label
        reach = queries.trials_to_reach(curves[j.id], reference)
        cols = st.columns(5)
        cols[0].metric("trials", j.trials_text)
        cols[1].metric("ok", counts.get("ok", 0))
        cols[2].metric("failed", sum(n for s, n in counts.items() if s != "ok"))
        final = queries.final_best(engine, j.id)
        best_label = "best" if j.objective == "latency_s" else f"best {j.objective}"
        cols[3].metric(
            f"{best_label} (final rounds)" if final else best_label,
            common.fmt_objective(j.best_value, j.objective)
            + (f" (95% CI {common.fmt_interval(final.ci)})" if final and final.ci else ""),
            help=final_text(final, j.objective)
            if final
            else "The best trial's "
            "median as the search measured it (the curve's last value): this job had "
            "no final rounds.",
        )
        cols[4].metric(
            "trials to 99% of best known",
            reach if reach is not None else (f"not in {j.n_done}" if curves[j.id] else "-"),
            help="Trials recorded before the best so far came within 1% of the best known "
            f"for this workload on this target and device: "
            f"{common.fmt_objective(reference, j.objective)}, {source}.",
        )
        if reference is not None:
            differs = ref.own and j.best_value is not None and j.best_value != reference
            st.caption(
                f"Trials to 99% are counted against the best known, "
                f"{common.fmt_objective(reference, j.objective)}: {source}."
                + (
                    " (A trial's median as the search measured it, as on the curve; the "
                    "best above is the final rounds' figure.)"
                    if differs
                    else ""
                )
            )
        if j.error:
            st.error(f"job error: {j.error}")
        if busy := job_queries.busy_text(engine, j):  # platform/health.py
            st.warning(busy, icon="⚠️")
        if not counts:
            st.info("This job has no trials yet.")
            return
        if not counts.get("ok"):
            st.warning(
                f"No trial of this job produced a correct measurement: all {sum(counts.values())}"
                " trials failed. The status breakdown and the errors below say how."
            )
        else:
            if j.best_params:
                link = f"trials?job={j.id}&trial={j.best_trial_id}" if j.best_trial_id else ""
                st.markdown(
                    f"**Best parameters:** `{common.params_text(j.best_params)}`"
                    + (f" — [trial {j.best_trial_id}]({link})" if link else "")
                )
            baselines_section(engine, j)
            what = "latency" if j.objective == "latency_s" else j.objective
            st.markdown(f"#### Best-so-far {what}, as the search measured it")
            jobs = {x.id: x for x in others} | {j.id: j}
            finals = {i: f for i in ids if (f := queries.final_best(engine, i)) is not None}
            st.plotly_chart(curve_figure(curves, jobs, finals), width="stretch", key="curve")
            if final is not None:
                st.caption(f"The line: the best trial so far by the search's own "
                           f"measurements. The star: {final_text(final, j.objective)}")  # fmt: skip
        left, right = st.columns(2)
        with left:
            st.markdown("#### Trials by status")
            st.plotly_chart(status_figure(counts), width="stretch", key="statuses")
            st.dataframe([{"status": s, "trials": n} for s, n in counts.items()], hide_index=True)
        with right:
            st.markdown("#### Environment")
            envs = queries.job_environments(engine, j.id)
            st.dataframe(
                [{ENV_COLUMNS[k]: v for k, v in e.items() if v is not None} for e in envs],
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
