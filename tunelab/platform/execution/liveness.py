"""A driver's liveness: the heartbeat it writes, how a takeover hands a job over, and how
it ends on SIGTERM.

Heartbeat. From its claim on, a driver beats from a thread of its own (`Heartbeat`):
every `TUNELAB_HEARTBEAT_S` (5 s) it sets the job's `heartbeat_at`, whatever its main
thread does (starting Ray, a learner update of minutes, an evaluation). While the
database is away the thread tries every second and writes as soon as it answers. A
beat refused because the job's lease changed means another driver took the job over:
the thread stops (the main loop sees the new lease within a second and stops too).

Judging a driver (`jobs.is_stale`). A driver on this host is alive while its process is
(a process started after the driver's last heartbeat is a reused pid, not the driver):
never `driver lost`, however long it has been silent. One on another host is lost once
it has not beaten for `TUNELAB_STALE_AFTER_S` (2 minutes). `resume` takes a job only
from a lost driver; `resume --force` from any.

Takeover. `--force` claims the job under a new lease at once. The old driver's next write
is refused (`LostOwnership`): it gives up what is in flight and writes the results it had
measured but not recorded without the lease (`Recorder.hand_over`). Trials are unique per
(job, candidate) and inserted with ON CONFLICT DO NOTHING, so whichever driver records a
candidate first keeps it and nothing is recorded twice. On this host the new driver waits
(up to `HANDOVER_S`) for the old process to end before it reads what is recorded, so it
skips what the old one measured; an old driver on another host, or one still busy after
the wait, hands over later, and its results still count (the new driver may then measure
some candidates again, and its own result for those is the one dropped).

SIGTERM (and Ctrl-C). `Interrupts` turns them into KeyboardInterrupt in the main thread
from before the claim on (the job is then marked `interrupted`), and is installed again
after Ray's start-up, which sets its own handler. A handler runs only when the main thread
runs Python: one blocked in native code (Ray's connect retries for minutes) would not see
the signal. A watchdog thread hears every signal through `signal.set_wakeup_fd`; if the
main thread has not acted on it within `PICKUP_S`, or the driver still runs `END_S`
after it, the watchdog marks the job interrupted itself and ends the process (Ray's
processes it started share its fate).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlalchemy import Engine

from tunelab.platform import jobs
from tunelab.schema.models import JobStatus

log = logging.getLogger(__name__)

ENV_HEARTBEAT_S = "TUNELAB_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 5.0
AWAY_RETRY_S = 1.0
# How long a forced takeover waits for the old driver on this host to hand over.
HANDOVER_S = 60.0
# After SIGTERM: how long the main thread may take to act on it, and to end.
PICKUP_S = 2.0
END_S = 30.0
EXIT_INTERRUPTED = 130


def heartbeat_s() -> float:
    """How often a driver beats: TUNELAB_HEARTBEAT_S, else 5 s."""
    try:
        value = float(os.environ.get(ENV_HEARTBEAT_S, "") or DEFAULT_HEARTBEAT_S)
    except ValueError:
        value = DEFAULT_HEARTBEAT_S
    return value if value > 0 else DEFAULT_HEARTBEAT_S


class Heartbeat:
    """A thread writing a job's heartbeat under a driver's lease until `stop`."""

    def __init__(
        self, engine: Engine, job_id: int, lease: int, every_s: float | None = None
    ) -> None:
        self.engine = engine
        self.job_id = job_id
        self.lease = lease
        self.every_s = every_s or heartbeat_s()
        self.lost = False  # the job was taken over: its lease is another driver's
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-job-{job_id}", daemon=True
        )

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating; waits a little for a beat in progress (one blocked on a database
        that does not answer is left behind: the thread is a daemon)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        away_since: float | None = None
        while not self._stop.is_set():
            try:
                held = jobs.beat(self.engine, self.job_id, self.lease)
            except Exception as exc:  # away (or worse): keep trying, the driver goes on
                if away_since is None:
                    away_since = time.monotonic()
                    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.warning("job %s: heartbeat not written, retrying: %s", self.job_id, why)
            else:
                if not held:
                    self.lost = True
                    log.warning("job %s: another driver holds it now; heartbeat stopped",
                                self.job_id)  # fmt: skip
                    return
                self.beats += 1
                if away_since is not None:
                    log.warning("job %s: heartbeat written again after %.0f s", self.job_id,
                                time.monotonic() - away_since)  # fmt: skip
                    away_since = None
            self._stop.wait(self.every_s if away_since is None else AWAY_RETRY_S)


def await_hand_over(before: Any, job_id: int) -> None:
    """After a forced claim of a job `before` described: give the driver that held it time
    to record what it measured and stop (on this host), or say what happens (another)."""
    if before.status != JobStatus.running:
        return
    if (before.driver_host, before.driver_pid) == (socket.gethostname(), os.getpid()):
        return
    alive = jobs.driver_alive(before)
    where = f"{before.driver_host} pid {before.driver_pid}"
    if alive is None:
        log.warning(
            "job %s: taken over from the driver on %s; it stops at its next write and records "
            "what it measured then (whichever driver records a candidate first keeps it)",
            job_id, where,
        )  # fmt: skip
        return
    if not alive:
        return
    log.warning("job %s: waiting up to %.0f s for its previous driver (%s) to record what it "
                "measured and stop", job_id, HANDOVER_S, where)  # fmt: skip
    deadline = time.monotonic() + HANDOVER_S
    while jobs.driver_alive(before) and time.monotonic() < deadline:
        time.sleep(0.2)
    if jobs.driver_alive(before):
        log.warning("job %s: the previous driver (%s) still runs; going on: it stops at its "
                    "next write and what it records then is kept", job_id, where)  # fmt: skip


class Interrupts:
    """SIGTERM and SIGINT as KeyboardInterrupt in the main thread, with a watchdog for a
    main thread that cannot act on them (see the module docstring). A no-op outside the
    main thread, where signal handlers cannot be set."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        # Marks the job interrupted when the watchdog has to end the process.
        self.on_stuck: Callable[[], None] | None = None
        self.active = threading.current_thread() is threading.main_thread()
        self._acted = threading.Event()  # the main thread took the signal
        self._done = threading.Event()  # the driver ended
        self._previous: dict[int, Any] = {}
        self._old_fd = -1
        self._pair: tuple[socket.socket, socket.socket] | None = None

    def __enter__(self) -> Interrupts:
        if not self.active:
            return self
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        read, write = socket.socketpair()
        write.setblocking(False)
        self._pair = (read, write)
        self._old_fd = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read,), name="interrupts", daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.active:
            return
        self._done.set()
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._pair is not None:
            self._pair[1].close()  # the watchdog's read sees the end

    def install(self) -> None:
        """Take SIGTERM back from whoever set a handler since (Ray's start-up)."""
        if self.active:
            signal.signal(signal.SIGTERM, self._handler)

    def acted(self) -> None:
        """The main thread acts on a signal some other handler turned into an exception."""
        self._acted.set()

    def _handler(self, signum: int, frame: Any) -> None:
        if self._acted.is_set():
            return  # once: the clean-up the first one started goes on undisturbed
        self._acted.set()
        raise KeyboardInterrupt

    def _watch(self, read: socket.socket) -> None:
        with read:
            while True:
                try:
                    data = read.recv(64)
                except OSError:
                    return
                if not data:
                    return  # the driver ended
                if any(b in (int(s) for s in self.SIGNALS) for b in data):
                    break
        if not self._acted.wait(PICKUP_S):
            self._end(f"did not act on the signal within {PICKUP_S:g} s")
        elif not self._done.wait(END_S):
            self._end(f"did not end within {END_S:g} s of the signal")

    def _end(self, why: str) -> None:
        if self._done.is_set():
            return
        log.warning("the driver %s: marking its job interrupted and ending it", why)
        if self.on_stuck is not None:
            # Bounded: a database that does not answer leaves the job `running` with a dead
            # pid, which `resume` takes without --force.
            marker = threading.Thread(target=self._mark, daemon=True)
            marker.start()
            marker.join(timeout=5.0)
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    def _mark(self) -> None:
        with contextlib.suppress(Exception):
            assert self.on_stuck is not None
            self.on_stuck()
