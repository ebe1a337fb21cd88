"""Steps: a job's or a trial's intermediate results (learning curves)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tunelab.platform.cli.common import DbOpt, Format, JobArg, emit, guard, out

app = typer.Typer()

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """Values as a one-line chart of block characters."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARKS[int((v - lo) / span * (len(SPARKS) - 1))] for v in values)


@app.command("steps")
def list_steps(
    job: JobArg,
    trial: Annotated[
        int | None, typer.Option(help="A trial's steps (its id), not the job's own.")
    ] = None,
    series: Annotated[
        str | None,
        typer.Option(help="A named series of the job, e.g. an RL evaluation's (eval:MODEL)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Show this metric's curve, down-sampled in the database."),
    ] = None,
    buckets: Annotated[int, typer.Option(min=1, help="Points of a --metric curve.")] = 60,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many steps.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    db: DbOpt = None,
) -> None:
    """A job's learning curve: the steps it or one of its trials reported.

    With --metric, the curve of one metric in --buckets points (first and last step,
    min, max and mean per bucket, computed in the database), drawn as a sparkline.
    """
    from tunelab.platform import api

    if metric is not None:
        points = guard(
            lambda: api.curve(job, metric, trial=trial, series=series, buckets=buckets, db=db)
        )
        records = [
            {"first_step": p.first_step, "last_step": p.last_step, "min": p.min,
             "max": p.max, "mean": p.mean, "count": p.count}
            for p in points
        ]  # fmt: skip
        if fmt != Format.table:
            emit(records, fmt)
            return
        if not records:
            out.print(f"no steps with metric {metric!r}")
            return
        means = [r["mean"] for r in records]
        out.print(f"{metric}: steps {records[0]['first_step']}..{records[-1]['last_step']}, "
                  f"min {min(r['min'] for r in records):.6g}, "
                  f"max {max(r['max'] for r in records):.6g}, last {means[-1]:.6g}")  # fmt: skip
        out.print(sparkline(means))
        return
    rows: list[dict[str, Any]] = guard(
        lambda: list(api.steps(job, trial=trial, series=series, limit=limit, db=db))
    )
    flat = [
        {"step": r["step"], **r["metrics"], "recorded_at": r["recorded_at"].isoformat()}
        for r in rows
    ]
    if fmt != Format.table:
        emit(flat, fmt)
        return
    if not flat:
        out.print("no steps recorded")
        return
    from rich.table import Table

    from tunelab.platform.rows import column_union

    names = [c for c in column_union(flat) if c != "recorded_at"]
    table = Table(title=f"{len(flat)} steps", title_justify="left")
    for name in names:
        table.add_column(name, no_wrap=True)
    for r in flat:
        table.add_row(*(_cell(r.get(n)) for n in names))
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)
