"""Throw-away databases for the benchmarks: each run gets its own, dropped afterwards."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_ADMIN = os.environ.get(
    "TUNELAB_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _close_pools() -> None:
    """Close tunelab's pooled connections so that a database can be dropped."""
    from tunelab.schema.db import dispose_engines

    dispose_engines()
    try:
        from tunelab.dashboard.db import clear_cache
    except ImportError:
        return
    clear_cache()


@contextmanager
def fresh_pg_database(tag: str) -> Iterator[str]:
    """A new PostgreSQL database on TUNELAB_BENCH_PG_URL's server; yields its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        _close_pools()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fresh_database(kind: str, tag: str) -> Iterator[str]:
    """A new database of `kind` ("postgres" or "sqlite"); yields its URL."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / f'{tag}.db'}"
        return
    with fresh_pg_database(tag) as url:
        yield url
