"""Trials: a filterable table (parameter ranges such as `tile_m>=64`), sorted over every
matching trial, paged; click a row for its detail: repeats beside the best trial's and
the baselines', parameters, error; CSV download."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries, style
from tunelab.dashboard.queries import trials as tq
from tunelab.dashboard.registry import Page
from tunelab.schema.models import TrialStatus

PAGE = Page(title="Trials", url_path="trials", icon=":material/table:", order=50)
PAGE_SIZE = 50
ALL = 0
LATENCIES = ("latency_median_s", "latency_min_s", "latency_stdev_s")
# Columns after the parameters, by their key in a page row: label and width.
AFTER: dict[str, tuple[str, int]] = {
    "latency_min_s": ("min", 80), "latency_stdev_s": ("stdev", 80),
    "n_repeats": ("repeats", 65), "value": ("objective", 85),
    "predicted_cost": ("predicted", 85), "baseline": ("baseline", 80),
    "build_s": ("build", 80), "run_s": ("run", 80), "attempts": ("attempts", 65),
    "worker_node": ("worker", 110), "job_id": ("job", 50),
}  # fmt: skip


def cell(value: Any) -> Any:
    """A parameter value for a cell: numbers as they are (4 significant figures for
    floats), text as text, blank for none."""
    if value is None:
        return ""
    if isinstance(value, float):
        return style.fmt_number(value)
    if isinstance(value, bool | int | str):
        return value
    return json.dumps(value)


def _busy(r: dict[str, Any]) -> bool:
    """Measured on a busy node (platform/health.py): a page row's flag, a detail's record."""
    return bool(r.get("busy_node") or (r.get("node_health") or {}).get("busy"))


def table_rows(rows: list[dict[str, Any]], *, all_jobs: bool) -> tuple[list[dict], dict]:
    """The page's rows as shown: what says how a trial did first (trial, status, median,
    parameters), human column names, latencies in ms/µs with 4 significant figures,
    blank cells for none. Returns the rows and their column widths."""
    params = list(dict.fromkeys(k for r in rows for k in r if k.startswith("p.")))
    untimed = any(r["value"] is not None and r["value"] != r["latency_median_s"] for r in rows)
    fixed = {"trial", "status", "median", *(label for label, _ in AFTER.values())}
    names = {p: p[2:] if p[2:] not in fixed else p for p in params}
    out = []
    for r in rows:
        timed = r["latency_median_s"] is not None
        row: dict[str, Any] = {
            "trial": r["id"],
            "status": f"{r['status']} ⚠ busy node" if _busy(r) else r["status"],
            "median": style.fmt_latency(r["latency_median_s"]),
        }
        row |= {names[p]: cell(r.get(p)) for p in params}
        row |= {
            "min": style.fmt_latency(r["latency_min_s"]),
            "stdev": style.fmt_latency(r["latency_stdev_s"]),
            "repeats": style.fmt_number(r["n_repeats"]),
        }
        if untimed:
            row["objective"] = style.fmt_number(r["value"])
        predicted = r["predicted_cost"]
        row["predicted"] = style.fmt_latency(predicted) if timed else style.fmt_number(predicted)
        row |= {
            "baseline": r["baseline"] or "",
            "build": style.fmt_latency(r["build_s"]),
            "run": style.fmt_latency(r["run_s"]),
            "attempts": style.fmt_number(r["attempts"]),
            "worker": r["worker_node"] or "",
        }
        if all_jobs:
            row["job"] = r["job_id"]
        out.append(row)
    widths: dict[str, int | str] = {"trial": 60, "status": 100, "median": 85}
    widths |= {names[p]: max(55, 9 * len(names[p])) for p in params}
    widths |= {label: w for label, w in AFTER.values()}
    return out, widths


def repeats_figure(series: list[tq.Repeats]) -> go.Figure:
    """A box with every repeat drawn beside it (a strip), one row per trial: the chosen
    one, the job's best, its final rounds and the library baselines."""
    values = [x for s in series for x in s.latencies_s]
    unit, scale = style.latency_unit(values)
    fig = go.Figure()
    for i, s in enumerate(series):
        fig.add_trace(
            go.Box(
                x=[x * scale for x in s.latencies_s], name=s.label, orientation="h",
                boxpoints="all", jitter=0.4, pointpos=0,
                marker={"color": style.PALETTE[i % len(style.PALETTE)], "size": 6},
                line={"color": style.PALETTE[i % len(style.PALETTE)]},
                hovertemplate=f"%{{x:.4g}} {unit}<extra>{s.label}</extra>",
            )
        )  # fmt: skip
    fig.update_layout(xaxis_title=f"latency per repeat ({unit})")
    return style.finish(
        fig, height=max(180, 70 + 55 * len(series)), x_log=common.log_axis(values), legend=False
    )


def measurement_rows(d: dict[str, Any]) -> list[dict[str, str]]:
    """The detail's measurement table: human field names, formatted values, no 'None'."""
    fields: list[tuple[str, str]] = [
        ("median", style.fmt_latency(d["latency_median_s"])),
        ("mean", style.fmt_latency(d["latency_mean_s"])),
        ("stdev", style.fmt_latency(d["latency_stdev_s"])),
        ("min", style.fmt_latency(d["latency_min_s"])),
        ("repeats", style.fmt_number(d["n_repeats"])),
        ("build time", style.fmt_latency(d["build_s"])),
        ("run time", style.fmt_latency(d["run_s"])),
        ("baseline", d["baseline"] or ""),
        ("model", f"{d['model']} v{d['model_version']}" if d["model"] else ""),
        ("worker", d["worker_node"] or ""),
        ("host", d["host"] or ""), ("CPU", d["cpu_model"] or ""), ("GPU", d["gpu_model"] or ""),
        ("started", f"{d['started_at']:%Y-%m-%d %H:%M:%S}" if d["started_at"] else ""),
        ("finished", f"{d['finished_at']:%Y-%m-%d %H:%M:%S}" if d["finished_at"] else ""),
        ("candidate", d["candidate"]),
    ]  # fmt: skip
    return [{"field": k, "value": v} for k, v in fields if v]


def show_detail(engine: Engine, trial_id: int) -> None:
    detail = tq.trial_detail(engine, trial_id)
    if detail is None:
        st.info(f"No trial {trial_id}.")
        return
    st.markdown(f"#### Trial {trial_id}")
    cols = st.columns(4)
    cols[0].metric("status", detail["status"])
    timed = detail["latency_median_s"] is not None
    cols[1].metric("median", style.fmt_latency(detail["latency_median_s"]) or "-")
    predicted = detail["predicted_cost"]
    cols[2].metric("predicted", (style.fmt_latency(predicted) if timed or not detail["value"]
                                 else style.fmt_number(predicted)) or "-")  # fmt: skip
    cols[3].metric("attempts", detail["attempts"])
    if _busy(detail):
        h = detail["node_health"]
        st.warning(
            f"Measured on a busy node: {h.get('others')} runnable tasks not ours on "
            f"{h.get('cores')} cores, load {h.get('load1')} (after waiting "
            f"{h.get('waited_s')} s for quiet). Its numbers are kept from every cache; "
            "measure it again on a quiet node to trust them."
        )
    series = tq.repeats(engine, trial_id, detail["job_id"])
    if series:
        st.plotly_chart(repeats_figure(series), width="stretch", key="repeats")
        st.caption(
            "Every timed repeat (dots) and their spread (box: quartiles, line: median) of "
            "this trial, of the job's best trial, of its final-round re-measurements and of "
            "the library baselines, where recorded."
        )
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
        st.dataframe(measurement_rows(detail), hide_index=True, key="measurement")
        other = {k: v for k, v in (detail["extra"] or {}).items() if k != "pipelined"}
        if other:
            st.markdown("**Extra**")
            st.code(json.dumps(other, indent=2), language="json")


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
    c1, c2, c3 = st.columns([2, 2, 3])
    job_id = c1.selectbox(
        "Job", ids, index=first, key="job",
        format_func=lambda i: "all jobs" if i == ALL else by_id[i].label,
    )  # fmt: skip
    statuses = c2.multiselect("Status", [str(s) for s in TrialStatus], key="status")
    text = c3.text_input(
        "Parameters", placeholder="tile_m>=64, stages=2, micro_n!=16", key="params",
        help="Conditions on parameters, joined by commas: =, !=, >=, <=, >, < (ranges on "
        "numbers; = and != also on text).",
    )  # fmt: skip
    one_job = None if job_id == ALL else job_id
    known = tq.known_params(engine, one_job)
    # Sorting by a parameter reads it from every matching trial's JSON: offered for one
    # job, not across the whole database.
    sorts = [*tq.SORTS, *(f"p.{k}" for k in known if one_job is not None)]
    s1, s2, s3 = st.columns([2, 1, 4])
    order = s1.selectbox(
        "Sort by (all matching trials)", sorts, key="sort",
        format_func=lambda k: tq.SORTS[k][0] if k in tq.SORTS else f"parameter {k[2:]}",
    )  # fmt: skip
    descending = s2.toggle("Descending", key="descending")
    conditions, problems = tq.parse_conditions(text)
    if problems:
        st.warning("Ignored: " + "; ".join(problems))
    flt = tq.TrialFilter(
        job_id=one_job, statuses=tuple(statuses), params=conditions, order=order or "id",
        descending=descending,
    )  # fmt: skip
    missing = tq.unknown_params(engine, flt)
    if missing:
        where = f"job {one_job}" if one_job is not None else "any job"
        st.error(
            f"No trial of {where} has a parameter named {', '.join(f'`{m}`' for m in missing)}."
            f" Known parameters: {', '.join(f'`{k}`' for k in known) or 'none'}."
        )
        return
    total = tq.count_trials(engine, flt)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = int(s3.number_input(f"Page (of {pages})", 1, pages, 1, key="page"))
    shown = [by_id[one_job]] if one_job is not None else jobs
    every = common.refresh_every(shown)
    # A new filter, order or page is a new table: no row stays selected across them.
    view = hashlib.sha1(repr((flt, page)).encode()).hexdigest()[:10]

    @st.fragment(run_every=every)
    def body() -> None:
        if every is not None:
            now = queries.list_jobs(engine, limit=500)[0] if one_job is None else [
                queries.get_job(engine, one_job) or by_id[one_job]
            ]  # fmt: skip
            common.stop_when_done(every, now)
        rows = tq.trial_page(engine, flt, page=page - 1, page_size=PAGE_SIZE)
        n = tq.count_trials(engine, flt) if every else total
        st.caption(
            f"{n} trials match; showing {len(rows)} from #{(page - 1) * PAGE_SIZE + 1}, "
            f"sorted by {tq.SORTS[order][0] if order in tq.SORTS else order[2:]}"
            f"{' (descending)' if descending else ''} across all {n}. Click a row for its "
            "detail." + (f" Refreshing every {every:g} s." if every else "")
        )
        if not rows:
            st.info("No trial matches these filters.")
            return
        shown_rows, widths = table_rows(rows, all_jobs=one_job is None)
        event = st.dataframe(
            shown_rows,
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="single-row",
            key=f"table-{view}",
            column_config=common.wide_columns(widths),
        )
        d1, d2 = st.columns(2)
        d1.download_button(
            "Download this page as CSV",
            tq.rows_to_csv(rows),
            file_name="trials-page.csv",
            mime="text/csv",
            key="csv_page",
        )
        d2.download_button(
            f"Download all {n} matching trials as CSV",
            lambda: "".join(tq.iter_trials_csv(engine, flt)),
            file_name=f"trials-{'all' if one_job is None else f'job-{one_job}'}.csv",
            mime="text/csv",
            key="csv_all",
            help="Streamed from the database in chunks when you click.",
        )
        picked = [i for i in event.selection.rows if i < len(rows)]
        asked = str(st.query_params.get("trial", ""))
        if picked:
            show_detail(engine, rows[picked[0]]["id"])
        elif asked.isdigit():
            show_detail(engine, int(asked))
        else:
            st.caption("Click a row of the table to see that trial's repeats and details.")

    body()


if __name__ == "__main__":
    common.run(render)
