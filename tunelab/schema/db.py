"""Opening the trial database: engines, migrations, and clear errors when it is unreachable
or read-only."""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tunelab.config import resolve_db_url

MIGRATIONS = Path(__file__).parent / "migrations"


# The key of the PostgreSQL advisory lock that serialises migrations ("tunelab" in ASCII).
MIGRATION_LOCK_KEY = 0x74756E656C6162


class DatabaseError(RuntimeError):
    """The database cannot be used: unreachable, malformed URL, or out of date."""


class DatabaseReadOnly(DatabaseError):
    """The database answers reads but refuses writes (file permissions, a SELECT-only
    role, a read-only transaction or standby)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"database {url} is read-only: {reason}")
        self.reason = reason


def normalise_url(url: str) -> str:
    """Prefer psycopg 3 for PostgreSQL URLs that name no driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"malformed database URL {url!r}: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_connection.cursor()
    # WAL lets the dashboard and the CLI read while a driver writes. A read-only file not
    # yet in WAL mode cannot switch; it can still be read, so that is no error here.
    # Switching a new file needs an exclusive lock, and two connections switching at once
    # may be told "locked" without the busy timeout applying (SQLite's deadlock
    # avoidance): the loser tries again.
    deadline = time.monotonic() + 30
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if read_only_reason(exc):
                break
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


_ENGINES: dict[str, Engine] = {}
_READY: set[str] = set()  # URLs checked reachable and migrated to head in this process
_READ_ONLY: dict[str, str] = {}  # URL -> why its database refuses writes (probed on open)


def _engine(url: str) -> Engine:
    if url not in _ENGINES:
        _ENGINES[url] = _create_engine(url)
    return _ENGINES[url]


def open_engine(url: str | None = None) -> Engine:
    """The shared engine for a URL, not checked reachable nor migrated: for a worker of a
    job whose driver did both, and whose database may be away right now (its accesses
    then fail as outages, which it rides out: `platform/outage.py`)."""
    url = normalise_url(resolve_db_url(url))
    try:
        return _engine(url)
    except Exception as exc:  # unknown dialect, missing driver
        raise DatabaseError(f"cannot use database {redact(url)}: {exc}") from None


def dispose_engines() -> None:
    """Close every pooled connection and forget every engine (before dropping a database)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
    _READY.clear()
    _READ_ONLY.clear()


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases, in-memory ones and `file:` URIs."""
    parsed = make_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    if parsed.query.get("uri") or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=4,
            connect_args={"connect_timeout": 5},
        )
    event.listen(engine, "handle_error", functools.partial(_name_read_only, redact(url)))
    return engine


def read_only_reason(exc: BaseException) -> str | None:
    """Why the database refused a write, if `exc` (a DBAPI error, or SQLAlchemy's wrapper
    of one) says it is read-only for this connection; else None."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        name = getattr(orig, "sqlite_errorname", "")
        if name.startswith("SQLITE_READONLY") or "readonly database" in str(orig):
            return str(orig)
        return None
    # PostgreSQL: insufficient_privilege, read_only_sql_transaction (a standby included)
    if getattr(orig, "sqlstate", None) in ("42501", "25006"):
        return str(orig).strip().splitlines()[0]
    return None


def _name_read_only(url: str, ctx: ExceptionContext) -> None:
    """A write the database refuses raises DatabaseReadOnly naming it, not a driver error
    (SQLAlchemy raises what a handle_error listener raises in place of its own)."""
    reason = read_only_reason(ctx.original_exception)
    if reason:
        raise DatabaseReadOnly(url, reason)


def get_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """One shared engine per URL, checked reachable and (by default) migrated to head and
    probed for writes.

    The check, the migration and the probe run once per URL and process; later calls
    return the same engine at once (its pool re-pings connections before use). Raises
    DatabaseError with a message naming the (redacted) URL when the database cannot be
    reached or its schema cannot be brought up to date.

    A read-only database (see `check_writable`) is no error here: what only reads (`tunelab
    jobs`, `show`, exports) works on it. Every write through the engine raises
    DatabaseReadOnly naming the database, before anything is written.
    """
    url = normalise_url(resolve_db_url(url))
    if migrate and url in _READY:
        return _ENGINES[url]
    try:
        engine = _engine(url)
    except Exception as exc:  # unknown dialect, missing driver
        raise DatabaseError(f"cannot use database {redact(url)}: {exc}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(f"cannot reach database {redact(url)}: {reason}") from None
    if migrate:
        upgrade(engine)
        reason = _probe_writes(engine)
        if reason:
            _READ_ONLY[url] = reason
        _READY.add(url)
    return engine


def _probe_writes(engine: Engine) -> str | None:
    """Why the (migrated) database refuses writes, or None if it takes them (or cannot say
    now). Writes nothing: SQLite attempts a no-op update in a transaction that is rolled
    back; PostgreSQL is asked for the role's privileges and whether transactions are
    read-only (a standby, default_transaction_read_only)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            try:
                conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
            except DatabaseReadOnly as exc:
                return exc.reason
            except OperationalError:  # e.g. locked by a writer all along: not read-only
                return None
            finally:
                conn.rollback()
            return None
        if engine.dialect.name != "postgresql":
            return None
        user, read_only, writes = conn.execute(
            text(
                "SELECT current_user, current_setting('transaction_read_only'), "
                "has_table_privilege(current_user, 'trials', 'INSERT') "
                "AND has_table_privilege(current_user, 'jobs', 'INSERT') "
                "AND has_table_privilege(current_user, 'jobs', 'UPDATE')"
            )
        ).one()
        conn.rollback()
    if read_only == "on":
        return "its transactions are read-only (a standby, or default_transaction_read_only)"
    if not writes:
        return f"role {user} may not insert into trials or jobs, or update jobs"
    return None


def check_writable(engine: Engine) -> None:
    """Raise DatabaseReadOnly if the probe on opening found that the database refuses
    writes: for callers that would rather refuse at once than at their first write."""
    url = engine.url.render_as_string(hide_password=False)
    if url in _READ_ONLY:
        raise DatabaseReadOnly(redact(url), _READ_ONLY[url])


def alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = alembic_config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (no-op when already there).

    Processes opening a fresh database at once migrate it one after the other: each takes
    the migration lock, re-reads the revision, and migrates only if no other did."""
    if revision == "head" and current_revision(engine) == head_revision():
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    try:
        with _migration_lock(engine) as conn:
            if revision == "head":
                current = MigrationContext.configure(conn).get_current_revision()
                conn.commit()
                if current == head_revision():
                    return
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate database {redact(str(engine.url))}: {exc}") from None


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection for migrating, held under a lock no other migration of the same
    database holds: a PostgreSQL session advisory lock on that connection, or an exclusive
    `flock` on `<file>.migrate.lock` next to a SQLite file."""
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            with _file_lock(_sqlite_file(engine.url.render_as_string(hide_password=False))):
                yield conn
            return
        lock = {"key": MIGRATION_LOCK_KEY}
        conn.execute(text("SELECT pg_advisory_lock(:key)"), lock)
        conn.commit()
        try:
            yield conn
        finally:
            if not conn.invalidated:  # else the server dropped the lock with the session
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), lock)
                conn.commit()


@contextmanager
def _file_lock(db_file: Path | None) -> Iterator[None]:
    if db_file is None:
        yield
        return
    try:
        fd = os.open(f"{db_file}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        # A directory nobody may write to: nor may the migration, which will say so.
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("trials")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session
