"""What every command shares: exit codes, consoles, common options, error handling and
the output formats.

Kept light: `tunelab --help` and `tunelab db url` import this and typer only. The API,
SQLAlchemy, the execution engine and rich's tables are imported by the commands that
use them.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from tunelab.schema.statuses import JobStatus

if TYPE_CHECKING:
    from rich.table import Table

    from tunelab.platform.records import TrialRecord


class Exit(enum.IntEnum):
    """Exit codes scripts can rely on."""

    OK = 0  # done; for --wait: the job completed
    JOB_FAILED = 1  # the job failed, or an unexpected error
    BAD_INPUT = 2  # invalid spec, options or arguments: nothing was written
    DB_UNREACHABLE = 3  # the database, Ray (or the --jobs-api) cannot be reached or migrated
    NOT_FOUND = 4  # no such job, or the job is in a state that refuses the action
    CANCELLED = 5  # the job was cancelled while we waited on it
    INTERRUPTED = 130  # Ctrl-C: the job is marked interrupted and can be resumed


EXIT_HELP = (
    "Exit codes: 0 done, 1 job failed, 2 invalid input (nothing written), "
    "3 database, Ray (or --jobs-api) unreachable, 4 no such job / wrong state, 5 cancelled, "
    "130 interrupted."
)

out = Console()
err = Console(stderr=True)

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: TUNELAB_DB_URL, else the SQLite file)."),
]
RayOpt = Annotated[
    str | None,
    typer.Option("--ray", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)."),
]
JobArg = Annotated[int, typer.Argument(help="Job id, as printed by submit and listed by jobs.")]


class Format(enum.StrEnum):
    """How `jobs` and `trials` print their rows."""

    table = "table"
    csv = "csv"
    json = "json"


def fail(code: Exit, message: str) -> NoReturn:
    """Print `message` as an error on stderr and exit with `code`."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line
    raise typer.Exit(int(code))


# The errors users can act on, most specific first: (module, class, exit code, message
# prefix). Matched through `sys.modules`, so that handling them imports nothing: an
# exception of a class whose module was never imported cannot have been raised.
ERRORS: tuple[tuple[str, str, Exit, str], ...] = (
    ("tunelab.platform.spec", "SpecError", Exit.BAD_INPUT, ""),
    ("tunelab.schema.db", "DatabaseError", Exit.DB_UNREACHABLE, ""),
    ("tunelab.platform.jobs", "JobNotFound", Exit.NOT_FOUND, ""),
    ("tunelab.platform.jobs", "JobStateError", Exit.NOT_FOUND, ""),
    ("tunelab.platform.outpaths", "NotRegularFile", Exit.BAD_INPUT, ""),
    ("builtins", "LookupError", Exit.NOT_FOUND, ""),  # e.g. no such artifact
    ("tunelab.platform.execution.pool", "RayUnavailable", Exit.DB_UNREACHABLE, ""),
    ("tunelab.platform.execution", "JobError", Exit.JOB_FAILED, "the job failed: "),
    ("tunelab.platform.search.replay", "ReplayError", Exit.BAD_INPUT, ""),
)


def classify(exc: BaseException) -> tuple[Exit, str] | None:
    """The exit code and message for an error users can act on; None for any other."""
    for module_name, class_name, code, prefix in ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is not None and isinstance(exc, cls):
            return code, f"{prefix}{exc}"
    if "sqlalchemy" in sys.modules:  # a database full or gone mid-write: one line, exit 3
        from tunelab.platform.outage import is_outage

        if is_outage(exc):
            orig = getattr(exc, "orig", None) or exc
            lines = str(orig).strip().splitlines()
            return Exit.DB_UNREACHABLE, (
                f"the database failed a write: {lines[0] if lines else type(orig).__name__}"
                " (full disk or unreachable); what it had not recorded was not kept"
            )
    return None


def guard(fn: Callable[[], Any]) -> Any:
    """Run `fn`, turning the errors users can act on into a message and an exit code."""
    try:
        return fn()
    except KeyboardInterrupt:
        err.print("interrupted: the job is marked interrupted; `tunelab resume` continues it")
        raise typer.Exit(int(Exit.INTERRUPTED)) from None
    except Exception as exc:
        known = classify(exc)
        if known is None:
            raise
        fail(*known)


def exit_for(status: JobStatus | str) -> NoReturn:
    """Exit with the code that says how a job ended."""
    code = {
        JobStatus.completed: Exit.OK,
        JobStatus.cancelled: Exit.CANCELLED,
        JobStatus.interrupted: Exit.INTERRUPTED,
    }.get(JobStatus(status), Exit.JOB_FAILED)
    raise typer.Exit(int(code))


def fmt_params(params: dict[str, Any]) -> str:
    """Parameters as `k=v` pairs, compact enough for a narrow column."""
    return " ".join(f"{k}={v}" for k, v in params.items())


def trials_table(title: str, trials: Sequence[TrialRecord], objective: str = "latency_s") -> Table:
    """Trials with their statistics and parameters, as a table: latency statistics for
    timed trials, else the job's objective (a ratio with its interval and verdict).

    Fits an 80-column terminal: the statistics never wrap, the parameters take the width
    that is left, and the less useful columns (node, min, stdev) are dropped first when
    the terminal is narrow."""
    from rich.table import Table

    from tunelab.platform import intervals
    from tunelab.units import fmt_seconds

    width = out.width
    timed = objective == "latency_s"
    stats = ("median", "min", "stdev") if timed else (objective,)
    if timed and width < 100:
        stats = ("median",)
    show_node = width >= 120
    table = Table(title=title, title_justify="left", pad_edge=False, box=None, header_style="bold")
    table.add_column("trial", no_wrap=True, justify="right")
    table.add_column("status", no_wrap=True)
    for col in stats:
        table.add_column(col, no_wrap=True, justify="right")
    table.add_column("params", ratio=1, overflow="fold")
    if show_node:
        table.add_column("node", overflow="ellipsis", max_width=24, no_wrap=True)
    for t in trials:
        values = {
            "median": fmt_seconds(t.latency_median_s), "min": fmt_seconds(t.latency_min_s),
            "stdev": fmt_seconds(t.latency_stdev_s),
            objective: intervals.fmt(t.value, objective, intervals.of_trial(t.extra, objective)),
        }  # fmt: skip
        status = f"{t.status} [yellow]busy[/]" if t.busy else t.status
        row = [str(t.id), status, *(values[c] for c in stats), fmt_params(t.params)]
        if show_node:
            row.append(t.worker_node or "-")
        table.add_row(*row)
    if any(t.busy for t in trials):
        table.caption = "busy: measured on a busy node (see tunelab show)"
        table.caption_justify = "left"
    return table


def _flat(value: Any) -> Any:
    """A CSV cell: lists and dicts as JSON text, anything else as it is."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def emit(records: list[dict[str, Any]], fmt: Format) -> None:
    """Write rows to stdout as JSON (nested values stay nested) or CSV (nested values as
    JSON text)."""
    from tunelab.platform.rows import write_csv

    if fmt == Format.json:
        sys.stdout.write(json.dumps(records, indent=2, default=str) + "\n")
        return
    if records:
        write_csv(sys.stdout, [{k: _flat(v) for k, v in r.items()} for r in records])
