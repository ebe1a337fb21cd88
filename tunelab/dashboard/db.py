"""Read-only access to the trial database for the dashboard.

The dashboard never writes and never migrates. On SQLite the file is opened with
`mode=ro` (and `PRAGMA query_only`); on PostgreSQL every transaction is read-only
(`default_transaction_read_only`), on top of the SELECT-only role the README recommends.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tunelab.config import resolve_db_url
from tunelab.schema.db import DatabaseError, normalise_url, redact


class SchemaMissing(DatabaseError):
    """The database answers but holds no tunelab tables."""


def _sqlite_readonly(path: Path) -> Engine:
    uri = f"file:{quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    return create_engine("sqlite://", creator=connect)


def _postgres_readonly(url: str) -> Engine:
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=4,
        max_overflow=4,
        connect_args={
            "connect_timeout": 5,
            "options": "-c default_transaction_read_only=on -c statement_timeout=60000 "
            "-c work_mem=64MB -c jit=off",
        },
    )

    @event.listens_for(engine, "connect")
    def _readonly(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.read_only = True  # psycopg 3: every transaction is READ ONLY

    return engine


_ENGINES: dict[str, Engine] = {}


def _readonly_engine(url: str) -> Engine:
    if url not in _ENGINES:
        _ENGINES[url] = _new_engine(url)
    return _ENGINES[url]


def _new_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise DatabaseError("the dashboard needs a SQLite file, not an in-memory database")
        path = Path(db).expanduser()
        if not path.exists():
            raise DatabaseError(
                f"no database at {path} yet: submit a job first (or run `tunelab db upgrade`)"
            )
        return _sqlite_readonly(path)
    return _postgres_readonly(url)


def open_readonly(url: str | None = None) -> Engine:
    """A read-only engine for `url` (default: TUNELAB_DB_URL or the SQLite default).

    Raises DatabaseError naming the (redacted) URL when the database cannot be reached,
    and SchemaMissing when it holds no tunelab tables. Never creates or migrates anything.
    """
    url = normalise_url(resolve_db_url(url))
    try:
        engine = _readonly_engine(url)
    except DatabaseError:
        raise
    except Exception as exc:  # unknown dialect, missing driver
        raise DatabaseError(f"cannot use database {redact(url)}: {exc}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            has_tables = inspect(conn).has_table("trials") and inspect(conn).has_table("jobs")
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(f"cannot reach database {redact(url)}: {reason}") from None
    if not has_tables:
        raise SchemaMissing(
            f"database {redact(url)} has no tunelab tables: run `tunelab db upgrade` "
            "or submit a job (the dashboard only reads)"
        )
    return engine


def clear_cache() -> None:
    """Dispose every engine opened so far (tests drop their databases afterwards)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
