"""What every command shares: exit codes, consoles, common options, error handling and
the output formats."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from tunelab.platform.execution import JobError
from tunelab.platform.jobs import JobNotFound, JobStateError
from tunelab.platform.rows import write_csv
from tunelab.platform.search.replay import ReplayError
from tunelab.platform.spec import SpecError
from tunelab.schema.db import DatabaseError
from tunelab.schema.models import JobStatus, Trial
from tunelab.units import fmt_seconds, fmt_value


class Exit(enum.IntEnum):
    """Exit codes scripts can rely on."""

    OK = 0  # done; for --wait: the job completed
    JOB_FAILED = 1  # the job failed, or an unexpected error
    BAD_INPUT = 2  # invalid spec, options or arguments: nothing was written
    DB_UNREACHABLE = 3  # the database (or the --jobs-api) cannot be reached or migrated
    NOT_FOUND = 4  # no such job, or the job is in a state that refuses the action
    CANCELLED = 5  # the job was cancelled while we waited on it
    INTERRUPTED = 130  # Ctrl-C: the job is marked interrupted and can be resumed


EXIT_HELP = (
    "Exit codes: 0 done, 1 job failed, 2 invalid input (nothing written), "
    "3 database (or --jobs-api) unreachable, 4 no such job / wrong state, 5 cancelled, "
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
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(int(code))


def guard(fn: Callable[[], Any]) -> Any:
    """Run `fn`, turning the errors users can act on into a message and an exit code."""
    try:
        return fn()
    except SpecError as exc:
        fail(Exit.BAD_INPUT, str(exc))
    except DatabaseError as exc:
        fail(Exit.DB_UNREACHABLE, str(exc))
    except (JobNotFound, JobStateError, LookupError) as exc:  # LookupError: no such artifact
        fail(Exit.NOT_FOUND, str(exc))
    except JobError as exc:
        fail(Exit.JOB_FAILED, f"the job failed: {exc}")
    except ReplayError as exc:
        fail(Exit.BAD_INPUT, str(exc))
    except KeyboardInterrupt:
        err.print("interrupted: the job is marked interrupted; `tunelab resume` continues it")
        raise typer.Exit(int(Exit.INTERRUPTED)) from None


def exit_for(status: JobStatus | str) -> NoReturn:
    """Exit with the code that says how a job ended."""
    code = {
        JobStatus.completed: Exit.OK,
        JobStatus.cancelled: Exit.CANCELLED,
        JobStatus.interrupted: Exit.INTERRUPTED,
    }.get(JobStatus(status), Exit.JOB_FAILED)
    raise typer.Exit(int(code))


def trials_table(title: str, trials: list[Trial], objective: str = "latency_s") -> Table:
    """Trials with their statistics and parameters, as a table: latency statistics for
    timed trials, else the job's objective."""
    table = Table(title=title, title_justify="left")
    timed = objective == "latency_s"
    for col in ("trial", "status", *(("median", "min", "stdev") if timed else (objective,))):
        table.add_column(col, no_wrap=True)
    table.add_column("params", ratio=1)
    table.add_column("node", overflow="ellipsis", max_width=24)
    for t in trials:
        params = ", ".join(f"{k}={v}" for k, v in t.params.items())
        values = (
            (fmt_seconds(t.latency_median_s), fmt_seconds(t.latency_min_s),
             fmt_seconds(t.latency_stdev_s))
            if timed else (fmt_value(t.value, objective),)
        )  # fmt: skip
        table.add_row(str(t.id), t.status, *values, params, t.worker_node or "-")
    return table


def emit(records: list[dict[str, Any]], fmt: Format) -> None:
    """Write rows to stdout as JSON or CSV."""
    if fmt == Format.json:
        sys.stdout.write(json.dumps(records, indent=2, default=str) + "\n")
        return
    if records:
        write_csv(sys.stdout, records)
