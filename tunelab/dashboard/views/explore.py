"""History & parameters: every trial's value over the search (not only the best so far),
which parameters matter (fANOVA), parallel coordinates and slice plots.

Every chart follows the jobs' primary objective and its direction: durations (`*_s`,
e.g. latency) on log axes in ms/µs, anything else (a reward, a speedup) on linear axes.
Large jobs are sampled in the database; the page says so, and of how many.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots
from sqlalchemy import Engine

from tunelab.dashboard import common, queries
from tunelab.dashboard.importance import N_TREES, Importance, encode, param_importance
from tunelab.dashboard.queries import explore as q
from tunelab.dashboard.registry import Page
from tunelab.dashboard.style import PALETTE, finish, fmt_latency, fmt_number, latency_unit

PAGE = Page(
    title="History & parameters", url_path="explore", icon=":material/scatter_plot:", order=25
)

TABS = ("History", "Importance", "Parallel coordinates", "Slice")
X_AXES = ("trial number", "time since start", "fraction of budget")
# Parameters shown first in the slice plots: they answer "does pipelining help here?".
PIPELINING = ("stages", "reg_stages")
MANY_LEVELS = 15  # above this many values a parameter is plotted as a scatter, not boxes


# --------------------------------------------------------------------------- objective


class Objective:
    """How the charts show the jobs' primary objective: its axis title, unit and scale
    (durations in ms/µs on a log axis), and which way is better."""

    def __init__(self, name: str, direction: str, values: Sequence[float]) -> None:
        self.name = name
        self.maximize = direction == "maximize"
        self.duration = name.endswith("_s")
        self.unit, self.scale = latency_unit(list(values)) if self.duration else ("", 1.0)

    @property
    def title(self) -> str:
        better = "higher" if self.maximize else "lower"
        if self.duration:
            what = "latency" if self.name == "latency_s" else self.name
            return f"{what} ({self.unit}, {better} is better)"
        return f"{self.name} ({better} is better)"

    @property
    def short(self) -> str:
        """The title without the direction, for narrow places (a parallel axis)."""
        if self.duration:
            what = "latency" if self.name == "latency_s" else self.name
            return f"{what} ({self.unit})"
        return self.name

    def show(self, value: float) -> float:
        return value * self.scale

    def fmt(self, value: float | None) -> str:
        return fmt_latency(value) if self.duration else fmt_number(value)


def job_label(j: queries.JobRow) -> str:
    return f"job {j.id} · {j.strategy}"


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def refit_key(n_done: int) -> int:
    """The trial count a cached sample and fit are keyed by: exact up to 1,000, then
    rounded down to 2 significant figures, so a running job's importance is refitted
    after about every 1-10% more trials, not on every refresh."""
    if n_done < 1000:
        return n_done
    unit = 10 ** (int(math.log10(n_done)) - 1)
    return n_done // unit * unit


@st.cache_data(show_spinner=False, max_entries=64)
def cached_history(_engine: Engine, url: str, job_id: int, n_done: int) -> q.History:
    """A job's history, fetched again when its trial count changes."""
    return q.history(_engine, job_id)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_sample(_engine: Engine, url: str, job_id: int, n_key: int) -> q.ParamSample:
    """A job's parameter sample, fetched again when `refit_key(n_done)` changes."""
    return q.param_sample(_engine, job_id)


@st.cache_data(show_spinner="Fitting the random forest...", max_entries=64)
def cached_importance(_engine: Engine, url: str, job_id: int, n_key: int, log: bool) -> Importance:
    """fANOVA importances of a job's parameter sample (fitted once per `n_key`)."""
    s = cached_sample(_engine, url, job_id, n_key)
    return param_importance(s.params, s.values, log=log)


def sample_note(jobs: Sequence[queries.JobRow], samples: dict[int, q.ParamSample]) -> str:
    """'job 3: a sample of 3,000 of its 540,000 ok trials (...)' for the sampled jobs."""
    parts = [
        f"job {j.id}: a sample of {samples[j.id].n:,} of its {samples[j.id].n_ok:,} ok trials "
        f"(about one in {samples[j.id].step}, evenly spread over its recording order)"
        for j in jobs
        if samples[j.id].step > 1
    ]
    return "; ".join(parts)


# --------------------------------------------------------------------------- history


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds >= 2 * 3600:
        return "h", 3600.0
    if seconds >= 120:
        return "min", 60.0
    return "s", 1.0


def history_figure(
    jobs: Sequence[queries.JobRow],
    histories: dict[int, q.History],
    obj: Objective,
    x_axis: str,
    spread: bool,
) -> go.Figure:
    """Per job (one colour each): every sampled ok trial as a dot, its baselines as dotted
    levels, the best so far as a step line; x as chosen (trial number, time since the
    job's first trial, fraction of the planned trials)."""
    fig = go.Figure()
    t_max = max((p.elapsed_s or 0.0 for h in histories.values() for p in h.points), default=0.0)
    t_unit, t_div = _time_unit(t_max)

    for i, j in enumerate(jobs):
        h = histories[j.id]
        elapsed = {p.n: p.elapsed_s for p in h.points}

        def x_of(n: int, job: queries.JobRow = j, el: dict = elapsed) -> float | None:
            if x_axis == "time since start":
                t = el.get(n)
                if t is None and n >= histories[job.id].n_trials:  # the curve's last point
                    t = max((v for v in el.values() if v is not None), default=None)
                return None if t is None else t / t_div
            if x_axis == "fraction of budget":
                return n / job.n_planned if job.n_planned else None
            return n

        searched = [p for p in h.points if p.baseline is None]
        ys = [obj.show(p.value) for p in searched]
        error: dict[str, Any] | None = None
        if spread and obj.duration and any(p.low is not None for p in searched):
            error = {
                "type": "data", "symmetric": False, "thickness": 1, "width": 0,
                "array": [obj.show(p.high) - y if p.high is not None else None
                          for p, y in zip(searched, ys, strict=True)],
                "arrayminus": [y - obj.show(p.low) if p.low is not None else None
                               for p, y in zip(searched, ys, strict=True)],
            }  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[x_of(p.n) for p in searched], y=ys, mode="markers", error_y=error,
                name=f"{job_label(j)}: trials", legendgroup=str(j.id),
                marker={"color": colour(i), "size": 5, "opacity": 0.45},
                customdata=[[p.n, obj.fmt(p.value)] for p in searched],
                hovertemplate="trial %{customdata[0]}: %{customdata[1]}<extra></extra>",
            )
        )  # fmt: skip
        # Each baseline (a library's kernel timed beside the search) as a dotted level
        # across the job's whole run, labelled at its end.
        x0 = 1 if x_axis == "trial number" else 0
        x1 = x_of(h.n_trials)
        for p in h.points:
            if p.baseline is None or x1 is None:
                continue
            y = obj.show(p.value)
            fig.add_trace(
                go.Scatter(
                    x=[x0, x1], y=[y, y], mode="lines+text", text=["", p.baseline],
                    textposition="top left", name=f"{job_label(j)}: {p.baseline}",
                    legendgroup=str(j.id), line={"color": colour(i), "dash": "dot", "width": 1},
                    hovertemplate=f"{p.baseline} (trial {p.n}): {obj.fmt(p.value)}<extra></extra>",
                )
            )  # fmt: skip
        if h.best:
            fig.add_trace(
                go.Scatter(
                    x=[x_of(p.n) for p in h.best], y=[obj.show(p.best) for p in h.best],
                    mode="lines", name=f"{job_label(j)}: best so far", legendgroup=str(j.id),
                    line={"color": colour(i), "width": 2, "shape": "hv"},
                    customdata=[[p.n, obj.fmt(p.best)] for p in h.best],
                    hovertemplate="best after trial %{customdata[0]}: %{customdata[1]}"
                    "<extra></extra>",
                )
            )  # fmt: skip
    x_title = {
        "trial number": "trial number",
        "time since start": f"time since the job's first trial started ({t_unit})",
        "fraction of budget": "fraction of the planned trials",
    }[x_axis]
    fig.update_layout(xaxis_title=x_title, yaxis_title=obj.title)
    return finish(fig, height=440, y_log=obj.duration)


def history_section(
    engine: Engine, url: str, jobs: Sequence[queries.JobRow], obj_name: str, direction: str
) -> None:
    histories = {j.id: cached_history(engine, url, j.id, j.n_done) for j in jobs}
    values = [p.value for h in histories.values() for p in h.points]
    if not values:
        st.info("No ok trial with a value yet: the history appears with the first one.")
        return
    obj = Objective(obj_name, direction, values)
    axes = [a for a in X_AXES if a != "fraction of budget" or all(j.n_planned for j in jobs)]
    c1, c2 = st.columns([3, 1])
    x_axis = c1.radio("x axis", axes, horizontal=True, key="explore_x")
    has_spread = obj.duration and any(p.low is not None for h in histories.values()
                                      for p in h.points)  # fmt: skip
    spread = c2.toggle(
        "repeat spread", value=False, key="explore_spread", disabled=not has_spread,
        help="An error bar from the fastest to the slowest timed repeat of each trial.",
    )  # fmt: skip
    fig = history_figure(jobs, histories, obj, x_axis, spread)
    st.plotly_chart(fig, width="stretch", key="explore_history")
    notes = [
        "Each dot is one ok trial (failed trials have no value and are not drawn); the line "
        "is the best so far, exact over every trial. The trial number counts every trial "
        "of the job in recording order. *Time since start* runs from the job's first "
        "trial's start to each trial's end: what the search cost in wall time, with its "
        "parallel workers and the strategy's own time; *fraction of budget* is the trial "
        "number over the planned trials, so jobs of different budgets share one axis."
    ]
    for j in jobs:
        h = histories[j.id]
        failed = h.n_trials - h.n_ok
        line = f"job {j.id}: {h.n_trials:,} trials, {h.n_ok:,} ok, {failed:,} failed"
        if h.sampled:
            line += (
                f"; drawn: a sample of {h.n_sampled:,} trials evenly spread over the "
                f"{h.n_trials:,} (about one in {round(h.n_trials / h.n_sampled)}), plus each "
                "trial that set a new best"
            )
        notes.append(line)
    st.caption("  \n".join(notes))


# --------------------------------------------------------------------------- importance


def importance_figure(jobs: Sequence[queries.JobRow], results: dict[int, Importance]) -> go.Figure:
    """Horizontal bars, one colour per job, parameters by the first job's importance."""
    names: list[str] = []
    for j in jobs:
        names += [n for n in results[j.id].importances if n not in names]
    names.reverse()  # plotly draws the first category at the bottom
    fig = go.Figure()
    for i, j in enumerate(jobs):
        imp = results[j.id].importances
        fig.add_trace(
            go.Bar(
                y=names, x=[imp.get(n, 0.0) for n in names], orientation="h",
                name=job_label(j), marker_color=colour(i),
                text=[fmt_number(imp.get(n), 2) for n in names], textposition="outside",
            )
        )  # fmt: skip
    fig.update_layout(barmode="group", xaxis_title="importance (share of variance, sums to 1)")
    fig.update_xaxes(range=[0, 1.1])
    return finish(fig, height=max(260, 60 + 28 * len(names) * max(1, len(jobs))))


def importance_section(
    engine: Engine, url: str, jobs: Sequence[queries.JobRow], obj_name: str
) -> None:
    log = obj_name.endswith("_s")
    samples = {j.id: cached_sample(engine, url, j.id, refit_key(j.n_done)) for j in jobs}
    fit = [j for j in jobs if samples[j.id].n >= 2]
    if not fit:
        st.info("Importance needs at least two ok trials of a job.")
        return
    results = {j.id: cached_importance(engine, url, j.id, refit_key(j.n_done), log) for j in fit}
    fit = [j for j in fit if results[j.id].importances]
    if not fit:
        constant = sorted({c for r in results.values() for c in r.constant})
        st.info(
            "No parameter varies among the ok trials, so none can explain the objective"
            + (f" (constant: {', '.join(constant)})." if constant else ".")
        )
        return
    st.plotly_chart(importance_figure(fit, results), width="stretch", key="explore_importance")
    names: list[str] = []
    for j in fit:
        names += [n for n in results[j.id].importances if n not in names]
    rows = []
    for name in names:
        row: dict[str, Any] = {"parameter": name}
        for j in fit:
            row[job_label(j)] = fmt_number(results[j.id].importances.get(name), 3)
        rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch")
    target = "log(value)" if log else "the value"
    notes = [
        f"fANOVA: a random forest of {N_TREES} trees (scikit-learn) is fitted to each job's "
        f"ok trials (parameters -> {target}); a parameter's importance is the share of the "
        "forest's variance that its marginal explains alone, averaged over the trees and "
        "normalised to sum 1. Interactions between parameters are not shown. Fitted once "
        "per job and trial count (to 2 significant figures past 1,000 trials)."
    ]
    note = sample_note(fit, samples)
    if note:
        notes.append(f"Fitted on {note}.")
    constant = sorted({c for j in fit for c in results[j.id].constant})
    if constant:
        notes.append(f"Left out, a single value in every trial: {', '.join(constant)}.")
    st.caption("  \n".join(notes))


# --------------------------------------------------------------------------- parameters


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (> 0)."""
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            t = m * 10.0**e
            if lo <= t <= hi:
                ticks.append(t)
    return ticks or [lo, hi]


def parcoords_figure(sample: q.ParamSample, obj: Objective) -> go.Figure:
    """One axis per varying parameter (its values, or its levels' names) and the
    objective last (log10 for durations); lines coloured by the objective, the best
    the brightest."""
    enc = encode(sample.params)
    dims: list[dict[str, Any]] = []
    for k, name in enumerate(enc.names):
        levels = enc.levels[k]
        if len(levels) > MANY_LEVELS and all(_level_order(v)[0] == 0 for v in levels):
            # Many numbers (a learning rate, say): their own values on the axis.
            dims.append({"label": name, "values": [levels[int(r)] for r in enc.x[:, k]]})
            continue
        dims.append(
            {
                "label": name, "values": enc.x[:, k], "range": [0, len(levels) - 1],
                "tickvals": list(range(len(levels))), "ticktext": [str(v) for v in levels],
            }
        )  # fmt: skip
    ys = [obj.show(v) for v in sample.values]
    if obj.duration:
        logs = [math.log10(y) for y in ys]
        ticks = _log_ticks(min(ys), max(ys))
        dims.append(
            {
                "label": obj.short, "values": logs,
                "tickvals": [math.log10(t) for t in ticks],
                "ticktext": [f"{t:g}" for t in ticks],
            }
        )  # fmt: skip
        shade = logs
    else:
        dims.append({"label": obj.short, "values": ys})
        shade = ys
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={
                "color": shade, "colorscale": "Viridis", "reversescale": not obj.maximize,
                "showscale": False,
            },
        )
    )  # fmt: skip
    fig = finish(fig, height=460, legend=False)
    fig.update_layout(margin={"t": 60, "l": 60, "r": 100, "b": 20})
    return fig


def _ordered_params(names: Sequence[str]) -> list[str]:
    first = [p for p in PIPELINING if p in names]
    return first + sorted(n for n in names if n not in first)


@dataclass(frozen=True)
class LevelStats:
    """The objective over the sampled trials with one value of a parameter: a box
    (quartiles, Tukey whiskers at the furthest data within 1.5 IQR) and the best."""

    level: str
    n: int
    q1: float
    median: float
    q3: float
    low: float
    high: float
    best: float


def level_stats(
    params: Sequence[dict[str, Any]], values: Sequence[float], name: str, maximize: bool
) -> list[LevelStats]:
    """Per value of parameter `name` (numbers in numeric order, then the rest as text),
    the box and best of `values` over the trials that have it."""
    groups: dict[Any, list[float]] = {}
    for p, v in zip(params, values, strict=True):
        if name in p:
            groups.setdefault(_key(p[name]), []).append(v)
    out = []
    for level in sorted(groups, key=_level_order):
        ys = np.array(groups[level])
        q1, med, q3 = np.percentile(ys, [25, 50, 75])
        reach = 1.5 * (q3 - q1)
        inside = ys[(ys >= q1 - reach) & (ys <= q3 + reach)]
        out.append(
            LevelStats(
                level=str(level), n=len(ys), q1=float(q1), median=float(med), q3=float(q3),
                low=float(inside.min()), high=float(inside.max()),
                best=float(ys.max() if maximize else ys.min()),
            )
        )  # fmt: skip
    return out


def _key(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def _level_order(value: Any) -> tuple[int, float, str]:
    """Numbers in numeric order before anything else (in text order)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, float(value), ""
    return 1, 0.0, str(value)


def slice_figure(
    jobs: Sequence[queries.JobRow],
    samples: dict[int, q.ParamSample],
    obj: Objective,
    params: Sequence[str],
) -> go.Figure:
    """One panel per parameter: per value of it, a box of the objective over the sampled
    trials (per job, one colour each) and a diamond at the best; a numeric parameter with
    many values is a scatter instead. Boxes are drawn from their statistics (computed
    here), so the figure stays small whatever the sample."""
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=list(params), vertical_spacing=0.24 / rows,
        horizontal_spacing=0.06,
    )  # fmt: skip
    levels_of = {
        name: sorted(
            {_key(p[name]) for j in jobs for p in samples[j.id].params if name in p},
            key=_level_order,
        )
        for name in params
    }
    scatter = {
        name: len(lv) > MANY_LEVELS and all(_level_order(v)[0] == 0 for v in lv)
        for name, lv in levels_of.items()
    }
    for i, j in enumerate(jobs):
        s = samples[j.id]
        for k, name in enumerate(params):
            r, c = k // cols + 1, k % cols + 1
            legend = {"legendgroup": str(j.id), "showlegend": k == 0}
            if scatter[name]:
                xs = [p[name] for p in s.params if name in p]
                ys = [obj.show(v) for p, v in zip(s.params, s.values, strict=True) if name in p]
                fig.add_trace(
                    go.Scatter(x=xs, y=ys, mode="markers", name=job_label(j), **legend,
                                 marker={"color": colour(i), "size": 4, "opacity": 0.4}),
                    row=r, col=c,
                )  # fmt: skip
                continue
            stats = level_stats(s.params, [obj.show(v) for v in s.values], name, obj.maximize)
            if not stats:
                continue
            levels = [b.level for b in stats]
            fig.add_trace(
                go.Box(
                    x=levels, q1=[b.q1 for b in stats], median=[b.median for b in stats],
                    q3=[b.q3 for b in stats], lowerfence=[b.low for b in stats],
                    upperfence=[b.high for b in stats], name=job_label(j), **legend,
                    marker_color=colour(i), offsetgroup=str(j.id),
                    hovertext=[f"{b.n} trials" for b in stats],
                ),
                row=r, col=c,
            )  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=levels, y=[b.best for b in stats], mode="markers",
                    name=f"{job_label(j)}: best", **legend,
                    marker={"color": colour(i), "symbol": "diamond", "size": 9,
                            "line": {"color": "white", "width": 1}},
                    offsetgroup=str(j.id),
                ),
                row=r, col=c,
            )  # fmt: skip
    for k, name in enumerate(params):
        if not scatter[name]:
            fig.update_xaxes(
                type="category", categoryorder="array",
                categoryarray=[str(v) for v in levels_of[name]],
                row=k // cols + 1, col=k % cols + 1,
            )  # fmt: skip
    fig.update_layout(boxmode="group", scattermode="group")
    fig.update_yaxes(title_text=obj.title, col=1)
    fig = finish(fig, height=300 * rows + 90, y_log=obj.duration)
    fig.update_layout(margin={"t": 90})  # the legend above the panels' titles
    return fig


def parameter_sections(
    engine: Engine,
    url: str,
    jobs: Sequence[queries.JobRow],
    obj_name: str,
    direction: str,
    tab: str,
) -> None:
    samples = {j.id: cached_sample(engine, url, j.id, refit_key(j.n_done)) for j in jobs}
    have = [j for j in jobs if samples[j.id].n]
    if not have:
        st.info("No ok trial yet: the parameter plots appear with the first one.")
        return
    obj = Objective(obj_name, direction, [v for j in have for v in samples[j.id].values])
    note = sample_note(have, samples)
    if tab == "Parallel coordinates":
        if len(have) > 1:
            by_id = {j.id: j for j in have}
            pick = st.selectbox("Job", list(by_id), format_func=lambda i: by_id[i].label,
                                key="explore_parcoords_job")  # fmt: skip
            job = by_id[pick or have[0].id]
        else:
            job = have[0]
        s = samples[job.id]
        if not encode(s.params).names:
            st.info("No parameter varies among this job's ok trials.")
            return
        st.plotly_chart(parcoords_figure(s, obj), width="stretch", key="explore_parcoords")
        caption = (
            f"{s.n:,} ok trials of job {job.id}, one line each, coloured by {obj.short}: the "
            f"brightest are the best ({'highest' if obj.maximize else 'lowest'}). Drag along "
            "an axis to select a range. Parameters with few values show them as ticks, evenly "
            "spaced."
        )
        if s.step > 1:
            caption += (
                f" A sample: about one in {s.step} of the job's {s.n_ok:,} ok trials, evenly "
                "spread over its recording order."
            )
        st.caption(caption)
        return
    names = sorted({k for j in have for p in samples[j.id].params for k in p})
    varying = [n for n in names if len({str(p.get(n)) for j in have
                                        for p in samples[j.id].params}) > 1]  # fmt: skip
    ordered = _ordered_params(varying or names)
    chosen = st.multiselect("Parameters", ordered, default=ordered[:9], key="explore_slice")
    if not chosen:
        st.info("Choose parameters to plot.")
        return
    fig = slice_figure(have, samples, obj, chosen)
    st.plotly_chart(fig, width="stretch", key="explore_slices")
    caption = (
        "Per value of each parameter: a box of the objective over the ok trials with that "
        "value (median, quartiles, whiskers) and a diamond at the best. Boxes of `stages` "
        "and `reg_stages` above 1 against those at 1 say whether pipelining helps here."
    )
    if note:
        caption += f"  \nSampled: {note}."
    st.caption(caption)


# --------------------------------------------------------------------------- page


def render(engine: Engine) -> None:
    """The page."""
    st.title("History & parameters")
    jobs = common.pick_jobs(engine, multiple=True, key="explore_jobs")
    if not jobs:
        all_jobs, _ = queries.list_jobs(engine, limit=1)
        if all_jobs:
            st.info("Choose one or more jobs (of the same workload, to compare them).")
        else:
            common.no_jobs()
        return
    first = jobs[0]
    same = [j for j in jobs if j.objective == first.objective]
    if len(same) < len(jobs):
        st.warning(
            f"The charts follow job {first.id}'s objective, {first.objective}; left out: "
            + ", ".join(f"job {j.id} ({j.objective})" for j in jobs if j not in same)
        )
    if len({j.workload for j in same}) > 1:
        st.caption("These jobs tune different workloads: their values may not compare.")
    url = common.db_url()

    @st.fragment(run_every=common.refresh_every(same))
    def body() -> None:
        fresh = [queries.get_job(engine, j.id) or j for j in same]
        tabs = st.tabs(list(TABS), key="explore_tab", on_change="rerun")
        for name, tab in zip(TABS, tabs, strict=True):
            if tab.open is False:  # only the open tab's queries and fits run
                continue
            with tab:
                if not any(j.n_done for j in fresh):
                    st.info("No trial recorded yet.")
                elif name == "History":
                    history_section(engine, url, fresh, first.objective, first.direction)
                elif name == "Importance":
                    importance_section(engine, url, fresh, first.objective)
                else:
                    parameter_sections(engine, url, fresh, first.objective, first.direction,
                                       name)  # fmt: skip

    body()


if __name__ == "__main__":
    common.run(render)
