"""A job's trials: list them, or export every one to a file."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from tunelab.platform.cli.common import (
    DbOpt,
    Exit,
    Format,
    JobArg,
    emit,
    err,
    fail,
    guard,
    out,
    trials_table,
)
from tunelab.schema.statuses import TrialStatus

app = typer.Typer()


class ExportFormat(enum.StrEnum):
    """The file formats of `export`."""

    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


@app.command("trials")
def list_trials(
    job: JobArg,
    top: Annotated[
        int | None, typer.Option(min=1, help="Only the N best correct (ok) trials.")
    ] = None,
    status: Annotated[
        TrialStatus | None, typer.Option(help="Only trials with this status.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    db: DbOpt = None,
) -> None:
    """A job's trials with parameters and their objective (latency statistics; a ratio
    with its 95% interval and verdict)."""
    from tunelab.platform import api
    from tunelab.platform.rows import column_union

    rows = guard(lambda: api.trials(job, db=db, top=top, status=status))
    objective = api.get_job(job, db=db).objective
    if fmt != Format.table:
        names = column_union(t.params for t in rows)
        emit([api.trial_row(t, names, nested=True, primary=objective) for t in rows], fmt)
        return
    out.print(trials_table(f"job {job}: {len(rows)} trials", rows, objective))


@app.command()
def export(
    job: JobArg,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv, jsonl or parquet.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: job-ID.FORMAT).")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Write every trial of a job to a file, streaming from the database.

    The file is written beside its place and moved there once complete: an existing file
    is replaced only by a finished export, never emptied by a failed one."""
    from tunelab.platform import api

    path = output or Path(f"job-{job}.{fmt.value}")
    try:
        api.check_output_path(path)
    except OSError as exc:
        fail(Exit.BAD_INPUT, str(exc))

    def write() -> int:
        try:
            return api.export(job, path, fmt.value, db=db)  # type: ignore[arg-type]
        except OSError as exc:  # e.g. no permission, disk full: the existing file stays
            fail(Exit.JOB_FAILED, f"cannot write {path}: {exc.strerror or exc}")

    n = guard(write)
    err.print(f"wrote {n} trials to {path}")
