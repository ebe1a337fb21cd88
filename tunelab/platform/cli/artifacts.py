"""Artifacts: list a job's, write one out, pin, prune."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from tunelab.platform.cli.common import DbOpt, Exit, Format, emit, fail, guard, out


class _JobFirst(TyperGroup):
    """`tunelab artifacts JOB` is `tunelab artifacts list JOB`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].isdigit():
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_JobFirst,
    no_args_is_help=True,
    help="A job's artifacts (checkpoints, rewritten graphs, kernel sources), stored in the "
    "database so every node reaches them. `tunelab artifacts JOB` lists a job's.",
)

RefArg = Annotated[
    str, typer.Argument(help="An artifact: its id, JOB:NAME, or a hash prefix (8+ hex digits).")
]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _record(a: Any) -> dict[str, Any]:
    return {
        "id": a.id, "job_id": a.job_id, "name": a.name, "checkpoint": a.checkpoint,
        "step": a.step, "pinned": a.pinned, "size": a.size, "hash": a.hash,
        "trial_key": a.trial_key, "meta": a.meta, "created_at": a.created_at.isoformat(),
    }  # fmt: skip


def _table(rows: list[Any], title: str) -> None:
    from rich.table import Table

    from tunelab.units import fmt_age

    table = Table(title=title, title_justify="left")
    for col in ("id", "job", "name", "step", "size", "hash", "pinned", "age"):
        table.add_column(col, no_wrap=col != "name")
    for a in rows:
        table.add_row(
            str(a.id), str(a.job_id), a.name, "-" if a.step is None else str(a.step),
            _size(a.size), a.hash[:12], "yes" if a.pinned else "", fmt_age(a.created_at),
        )  # fmt: skip
    out.print(table)


@app.command("list")
def list_artifacts(
    job: Annotated[int | None, typer.Argument(help="Job id (default: every job).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    db: DbOpt = None,
) -> None:
    """List artifacts, newest last."""
    from tunelab.platform import api

    rows = guard(lambda: api.artifacts(job, db=db))
    if fmt != Format.table:
        emit([_record(a) for a in rows], fmt)
        return
    if not rows:
        out.print("no artifacts" + (f" in job {job}" if job is not None else ""))
        return
    _table(rows, f"{len(rows)} artifacts" + (f" of job {job}" if job is not None else ""))


@app.command()
def get(
    ref: RefArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: the artifact's name).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
    db: DbOpt = None,
) -> None:
    """Write an artifact to a file, checking its hash; an existing file is never touched
    unless --overwrite."""
    from tunelab.platform import api
    from tunelab.platform.artifacts import get_artifact
    from tunelab.schema.db import get_engine

    if output is None:
        info = guard(lambda: get_artifact(guard(lambda: get_engine(db)), ref))
        output = Path(info.name.replace("/", "_"))
    if output.is_dir():
        fail(Exit.BAD_INPUT, f"{output} is a directory: give a file name")
    try:
        info = guard(lambda: api.get_artifact(ref, output, overwrite=overwrite, db=db))
    except FileExistsError:
        fail(Exit.BAD_INPUT, f"{output} exists: pass --overwrite to replace it")
    out.print(f"wrote {_size(info.size)} of {info.ref} to {output} (sha256 {info.hash[:12]})")


@app.command()
def pin(ref: RefArg, db: DbOpt = None) -> None:
    """Keep an artifact through every prune."""
    from tunelab.platform import api

    info = guard(lambda: api.pin_artifact(ref, True, db=db))
    out.print(f"pinned {info.ref}")


@app.command()
def unpin(ref: RefArg, db: DbOpt = None) -> None:
    """Let a pinned artifact be pruned again."""
    from tunelab.platform import api

    info = guard(lambda: api.pin_artifact(ref, False, db=db))
    out.print(f"unpinned {info.ref}")


@app.command()
def prune(
    job: Annotated[int | None, typer.Argument(help="Job id (default: every job).")] = None,
    keep: Annotated[int, typer.Option(min=0, help="Checkpoints kept per evaluation.")] = 3,
    dry_run: Annotated[bool, typer.Option(help="Say what would go; delete nothing.")] = False,
    db: DbOpt = None,
) -> None:
    """Delete old checkpoints (all but the newest --keep of each job and evaluation;
    pinned ones stay) and the stored content nothing names any more."""
    from tunelab.platform import api

    gone = guard(lambda: api.prune_artifacts(job, keep_last=keep, dry_run=dry_run, db=db))
    verb = "would delete" if dry_run else "deleted"
    freed = sum(a.size for a in gone)
    out.print(f"{verb} {len(gone)} checkpoints ({_size(freed)} named)")
