"""`tunelab db`: database maintenance."""

from __future__ import annotations

import typer

from tunelab.config import redact_url, resolve_db_url
from tunelab.platform.cli.common import DbOpt, guard, out

app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(db: DbOpt = None) -> None:
    """Create the tables or migrate them to the current schema."""
    from tunelab.schema.db import current_revision, get_engine, redact

    engine = guard(lambda: get_engine(db, migrate=True))
    out.print(f"{redact(str(engine.url))} is at revision {current_revision(engine)}")


@app.command("url")
def db_url(db: DbOpt = None) -> None:
    """Print the database URL in use (password hidden)."""
    out.print(redact_url(resolve_db_url(db)), highlight=False, soft_wrap=True)
