"""Riding out a database outage: a driver keeps going while its database is away.

A server restarted, stopped for a while, or a disk full: the driver's writes and periodic
reads go through an `Outage`. An access that fails because the database is unreachable or
out of room marks the database away (since when) and is retried later, with an
exponential backoff capped at `MAX_BACKOFF_S`; meanwhile the driver goes on collecting
results into the recorder's buffer. A one-line warning says so about every
`WARN_EVERY_S`. Once an access succeeds everything buffered is written, each result
once. Away longer than the limit (`TUNELAB_DB_OUTAGE_S`, default 10 minutes), the next
access raises `DatabaseOutage`: a `DatabaseError`, so the CLI exits 3 with one line, and
the job, still `running` with an old heartbeat, can be resumed.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from tunelab.schema.db import DatabaseError

OUTAGE_ENV = "TUNELAB_DB_OUTAGE_S"
DEFAULT_OUTAGE_S = 600.0
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 5.0
WARN_EVERY_S = 10.0

# PostgreSQL SQLSTATEs that say the server is away or out of room, not that a statement
# is wrong: class 08 (connection exceptions), class 53 (disk full, out of memory, too many
# connections), and an administrator's or a crash's shutdown, or a server starting up.
_PG_AWAY_CLASSES = ("08", "53")
_PG_AWAY_STATES = ("57P01", "57P02", "57P03")
_SQLITE_AWAY = ("database or disk is full", "disk i/o error", "unable to open database file")
_FULL = ("disk is full", "could not extend file", "no space left on device")

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseOutage(DatabaseError):
    """The database stayed unreachable (or full) longer than the outage limit."""


def outage_limit_s() -> float:
    """How long a driver waits for its database: TUNELAB_DB_OUTAGE_S, else 10 minutes."""
    raw = os.environ.get(OUTAGE_ENV, "").strip()
    if not raw:
        return DEFAULT_OUTAGE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:  # NaN included
        log.warning("%s=%r is no number of seconds; using %g", OUTAGE_ENV, raw, DEFAULT_OUTAGE_S)
        return DEFAULT_OUTAGE_S
    return value


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is unreachable or out of room (worth waiting for),
    rather than that a statement or the schema is wrong."""
    orig: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        # "locked": a writer held the file past the busy timeout; it will let go.
        return any(s in message for s in _SQLITE_AWAY) or "database is locked" in message
    psycopg = sys.modules.get("psycopg")  # not imported: no PostgreSQL error to look at
    if psycopg is not None and isinstance(orig, psycopg.Error):
        state = orig.sqlstate
        if state is None:  # failed to connect, or the connection broke mid-way
            return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
        return state[:2] in _PG_AWAY_CLASSES or state in _PG_AWAY_STATES
    return False


def _first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


class Outage:
    """One database's availability as a driver sees it: since when it has been away, when
    to try it again, and when to give up.

    `tolerate()` runs a block against the database: an outage error is noted and
    swallowed, any other error raised, and success ends the outage. `attempt` and `retry`
    wrap a call, once (skipped until the backoff has passed) or until it answers.
    """

    def __init__(self, database: str, *, limit_s: float | None = None, hint: str = "") -> None:
        self.database = database  # as shown in messages: a redacted URL
        self.limit_s = outage_limit_s() if limit_s is None else limit_s
        self.hint = hint
        self.since: float | None = None  # time.monotonic() of the first failed access
        self.recovered_at: float | None = None
        self._since_clock = ""
        self._next_try = 0.0
        self._backoff = FIRST_BACKOFF_S
        self._warned = -math.inf
        self._reason = ""
        self._full = False

    @classmethod
    def for_job(cls, engine: Engine, job_id: int) -> Outage:
        return cls(
            engine.url.render_as_string(hide_password=True),
            hint=f"job {job_id} stays resumable: `tunelab resume {job_id}` once it is back",
        )

    @property
    def away(self) -> bool:
        return self.since is not None

    def due(self) -> bool:
        """Whether to try the database now: always while it answers; while it is away, once
        the backoff has passed (or, for a last try, the limit)."""
        if self.since is None:
            return True
        return time.monotonic() >= min(self._next_try, self.since + self.limit_s)

    def settled(self, seconds: float) -> bool:
        """The database answers and has answered for at least `seconds` (what others could
        not write while it was away, such as heartbeats, they have written since)."""
        if self.since is not None:
            return False
        return self.recovered_at is None or time.monotonic() - self.recovered_at >= seconds

    @contextmanager
    def tolerate(self) -> Iterator[None]:
        """Run the block against the database; an outage error is swallowed (DatabaseOutage
        past the limit), any other error raised."""
        try:
            yield
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._failed(exc)
        else:
            self._answered()

    def attempt(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """`fn(...)` if the database is due a try and answers; else None."""
        if not self.due():
            return None
        with self.tolerate():
            return fn(*args, **kwargs)
        return None

    def retry(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(...)`, tried until the database answers (DatabaseOutage past the limit)."""
        while True:
            if self.since is not None:
                wake = min(self._next_try, self.since + self.limit_s)
                time.sleep(max(0.0, wake - time.monotonic()))
            with self.tolerate():
                return fn(*args, **kwargs)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._reason = _first_line(exc)
        self._full = any(s in self._reason.lower() for s in _FULL)
        if self.since is None:
            self.since = now
            self._since_clock = datetime.now().strftime("%H:%M:%S")
            self._backoff = FIRST_BACKOFF_S
            self._warned = -math.inf
        else:
            self._backoff = min(2 * self._backoff, MAX_BACKOFF_S)
        self._next_try = now + self._backoff
        away_s = now - self.since
        state = "full" if self._full else "unreachable"
        if away_s >= self.limit_s:
            hint = f"; {self.hint}" if self.hint else ""
            raise DatabaseOutage(
                f"database {self.database} {state} since {self._since_clock} ({away_s:.0f} s, "
                f"longer than {OUTAGE_ENV}={self.limit_s:g}): {self._reason}{hint}"
            ) from None
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning(
                "database %s %s since %s, retrying (%.0f s left): %s",
                self.database, state, self._since_clock, self.limit_s - away_s, self._reason,
            )  # fmt: skip

    def _answered(self) -> None:
        if self.since is None:
            return
        now = time.monotonic()
        log.warning("database %s answers again after %.0f s", self.database, now - self.since)
        self.since = None
        self.recovered_at = now
