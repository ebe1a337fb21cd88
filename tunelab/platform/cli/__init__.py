"""`tunelab`: submit tuning jobs, follow them, and query every trial they recorded.

`app` is the command line; each module adds the commands of one concept to it.
"""

from __future__ import annotations

import typer

from tunelab.platform.cli import (
    artifacts,
    best,
    cluster,
    dashboard,
    db,
    jobs,
    kinds,
    replay,
    steps,
    trials,
)
from tunelab.platform.cli.common import EXIT_HELP

__all__ = ["app", "main"]

app = typer.Typer(
    help=(
        "Distributed autotuning of deep-learning compiler optimisations. Every trial is "
        "recorded in a database (TUNELAB_DB_URL or --db; default: a SQLite file in your "
        "data directory) and runs on Ray (RAY_ADDRESS or --ray; default: a local Ray).\n\n"
        + EXIT_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Unnamed groups add their commands at the top level, in this order in --help.
app.add_typer(jobs.app)
app.add_typer(trials.app)
app.add_typer(best.app)
app.add_typer(steps.app)
app.add_typer(kinds.app)
app.add_typer(dashboard.app)
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(db.app, name="db")
app.add_typer(cluster.app, name="cluster")
app.add_typer(replay.app, name="replay")


def main() -> None:
    """The `tunelab` console script."""
    app()
