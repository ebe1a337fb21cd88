"""Kinds and strategies: what this installation can run."""

from __future__ import annotations

import typer

from tunelab.platform.cli.common import out

app = typer.Typer()


@app.command("kinds")
def list_kinds() -> None:
    """The job kinds and search strategies installed, with each kind's objectives.

    A spec names one in `kind:` and `search.strategy`; a kind's primary objective (listed
    first, with its direction) is what every ranking of its trials follows.
    """
    from rich.table import Table

    from tunelab.platform.kinds import available_kinds, get_kind
    from tunelab.platform.search.strategies import available_strategies

    table = Table(title="job kinds", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("objectives", no_wrap=True)
    table.add_column("evaluations", no_wrap=True)
    table.add_column("suites")
    table.add_column("its strategies")
    for name in sorted(available_kinds()):
        kind = get_kind(name)
        objectives = "\n".join(f"{o.name} ({o.direction[:3]})" for o in kind.objectives)
        table.add_row(
            name, objectives, "long-running" if kind.long_running else "timed",
            "\n".join(sorted(kind.suites())) or "-", ", ".join(sorted(kind.strategies())) or "-",
        )  # fmt: skip
    out.print(table)
    out.print("strategies: " + ", ".join(sorted(available_strategies())))
