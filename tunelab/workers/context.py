"""The evaluation context a worker hands to `JobKind.measure`: steps, checkpoints,
artifacts and kind data in the database, a heartbeat, and the stop signal.

Nothing here touches the database until an evaluation uses it (timing kinds never do).
A long-running evaluation gets a heartbeat thread that, every `HEARTBEAT_S`, writes its
buffered steps, marks its `running` trial alive and reads the job's status, so a cancel
(or a driver that gave the evaluation up) reaches `should_stop()` within seconds.

Workers ride out their database as the driver does (`platform/outage.py`): while it is
unreachable, steps stay buffered and heartbeats are skipped, and every other access
(checkpoints, artifacts, kind data, the last flush of steps) is retried with backoff
within the same outage limit (`TUNELAB_DB_OUTAGE_S`). An evaluation never fails because
the database blinked; past the limit it fails with `DatabaseOutage` and is retried as
any failed evaluation is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update

from tunelab.platform import artifacts, kind_data
from tunelab.platform.kinds import EvalContext
from tunelab.platform.outage import Outage
from tunelab.platform.steps import StepWriter
from tunelab.schema.models import Job, JobStatus, Trial, TrialStatus

HEARTBEAT_S = 2.0


@dataclass(frozen=True)
class JobHandle:
    """What a worker needs to reach a job's records: the database and the job."""

    db_url: str
    job_id: int
    kind: str
    keep_checkpoints: int = 3
    run_timeout_s: float | None = None


class WorkerContext(EvalContext):
    """EvalContext for one evaluation on a worker."""

    def __init__(
        self,
        job: JobHandle,
        trial_key: str,
        *,
        attempt: int = 1,
        cache: dict[str, Any] | None = None,
        heartbeat: bool = False,
    ) -> None:
        self.job = job
        self.job_id = job.job_id
        self.trial_key = trial_key
        self.attempt = attempt
        self.cache = cache if cache is not None else {}
        self.deadline = (
            time.monotonic() + job.run_timeout_s if job.run_timeout_s is not None else None
        )
        self._engine: Engine | None = None
        self._outage: Outage | None = None
        self._steps: StepWriter | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if heartbeat:
            self._thread = threading.Thread(
                target=self._beat, name="tunelab-heartbeat", daemon=True
            )
            self._thread.start()

    # -- database -------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from tunelab.schema.db import open_engine

            # Not checked here: the database may be away right now, and every access
            # below rides that out (an unreachable server is an outage, not an error).
            self._engine = open_engine(self.job.db_url)
        return self._engine

    @property
    def outage(self) -> Outage:
        """This evaluation's view of its database's outages (the evaluation thread's)."""
        if self._outage is None:
            self._outage = Outage.for_job(self.engine, self.job_id)
        return self._outage

    def _retry(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.outage.retry(fn, *args, **kwargs)

    def _writer(self) -> StepWriter:
        if self._steps is None:
            self._steps = StepWriter(self.engine, self.job_id, max_rows=10_000, max_wait_s=1e9)
        return self._steps

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            try:
                self._flush_steps()
                with self.engine.begin() as conn:
                    conn.execute(
                        update(Trial)
                        .where(
                            Trial.job_id == self.job_id,
                            Trial.candidate == self.trial_key,
                            Trial.status == TrialStatus.running,
                        )
                        .values(heartbeat_at=datetime.now(UTC))
                    )
                    status = conn.execute(select(Job.status).where(Job.id == self.job_id)).scalar()
                if status != JobStatus.running:
                    self._stop.set()
            except Exception:  # the database is away: keep buffering, try again next beat
                continue

    def _flush_steps(self) -> None:
        with self._lock:
            if self._steps is not None and self._steps.pending():
                self._steps.flush()

    def close(self) -> None:
        """End the heartbeat and write every buffered step (waiting out an outage within
        the limit; DatabaseOutage past it)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self._retry(self._flush_steps)

    # -- EvalContext ----------------------------------------------------------------

    def report(self, step: int, metrics: dict[str, Any]) -> None:
        with self._lock:
            writer = self._writer()
            writer.add(step, metrics, trial_key=self.trial_key)
            full = self._thread is None and writer.pending() >= 10_000
        if full:  # no heartbeat thread writes them: write a full buffer here
            self.outage.attempt(self._flush_steps)  # away: they stay buffered

    def should_stop(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return True
        return self._stop.is_set()

    def save_checkpoint(self, step: int, data: bytes) -> None:
        self._retry(self._flush_steps)  # the steps a checkpoint covers are recorded first
        self._retry(
            artifacts.save_checkpoint, self.engine, self.job_id, step, data,
            trial_key=self.trial_key, keep_last=self.job.keep_checkpoints,
        )  # fmt: skip

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        info = self._retry(
            artifacts.latest_checkpoint, self.engine, self.job_id, trial_key=self.trial_key
        )
        if info is None or info.step is None:
            return None
        return info.step, self._retry(artifacts.read_blob, self.engine, info.hash)

    def save_artifact(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> str:
        info = self._retry(
            artifacts.save_artifact, self.engine, self.job_id, name, data,
            trial_key=self.trial_key, meta=meta,
        )  # fmt: skip
        return info.hash

    def load_artifact(self, ref: str) -> bytes:
        info = self._retry(artifacts.get_artifact, self.engine, ref)
        return self._retry(artifacts.read_blob, self.engine, info.hash)

    def kind_data(self, key: dict[str, Any]) -> dict[str, Any] | None:
        return self._retry(kind_data.get, self.engine, self.job.kind, key)

    def put_kind_data(self, key: dict[str, Any], value: dict[str, Any]) -> None:
        self._retry(kind_data.put, self.engine, self.job.kind, key, value)
