"""`tunelab dashboard`: serve the Streamlit dashboard over a read-only connection."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tunelab.config import resolve_db_url
from tunelab.platform.cli.common import EXIT_HELP, DbOpt, err, guard

app = typer.Typer()


@app.command(epilog=EXIT_HELP)
def dashboard(
    db: DbOpt = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8501,
    address: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 to serve other machines.")
    ] = "127.0.0.1",
) -> None:
    """Start the web dashboard (Streamlit): jobs, trials, model accuracy and speedups.

    It only reads (a read-only connection; nothing is migrated). Exits 3 at once if the
    database cannot be reached or holds no tunelab tables.
    """
    import os

    from tunelab.config import ENV_DB_URL
    from tunelab.dashboard.db import open_readonly
    from tunelab.schema.db import redact

    url = resolve_db_url(db)
    guard(lambda: open_readonly(url))
    app_path = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.port", str(port), "--server.address", address,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    err.print(
        f"dashboard: http://{address}:{port}  (database {redact(url)}, read-only; Ctrl-C stops)",
        highlight=False,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, {**os.environ, ENV_DB_URL: url})
