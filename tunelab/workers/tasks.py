"""What runs on cluster nodes: the build task and the measurement worker.

Both catch every failure of a candidate and report it as data; only the death of the
worker process itself reaches the driver as a Ray error.
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tunelab.platform.kinds import Built, CandidateError, JobKind
from tunelab.platform.spec import JobSpec
from tunelab.schema.models import TrialStatus

_MAX_ERROR = 8000


def node_label() -> str:
    """This worker's node, as recorded on each trial: host and a short Ray node id."""
    try:
        import ray

        node_id = ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # outside Ray (tests calling workers directly)
        node_id = "local"
    return f"{socket.gethostname()}/{node_id}"


@dataclass
class Outcome:
    """One phase's result for one candidate, as a worker reports it."""

    status: TrialStatus
    seconds: float
    node: str
    started_at: datetime
    error: str | None = None
    built: Built | None = None
    latencies_s: list[float] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] | None = None


def _failure(exc: BaseException) -> tuple[TrialStatus, str]:
    if isinstance(exc, CandidateError):
        return exc.status, str(exc)[:_MAX_ERROR]
    text = "".join(traceback.format_exception(exc))
    return TrialStatus.run_error, f"unexpected {type(exc).__name__}: {text[-_MAX_ERROR:]}"


def build_candidates(
    kind: JobKind, spec: JobSpec, params_list: list[dict[str, Any]]
) -> list[Outcome]:
    """Build a chunk of candidates one after another (a CPU task)."""
    return [build_candidate(kind, spec, params) for params in params_list]


def build_candidate(kind: JobKind, spec: JobSpec, params: dict[str, Any]) -> Outcome:
    """Build one candidate."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        built = kind.build(spec, params)
    except Exception as exc:
        status, error = _failure(exc)
        if status == TrialStatus.run_error:  # anything unexpected in a build is a build error
            status = TrialStatus.build_error
        return Outcome(status, time.perf_counter() - t0, node_label(), started, error=error)
    return Outcome(
        TrialStatus.built,
        time.perf_counter() - t0,
        node_label(),
        started,
        built=built,
        info=built.info,
    )


class MeasureWorker:
    """Holds one device (a CPU node, or one GPU) and measures candidates one at a time."""

    def __init__(self) -> None:
        from tunelab.workers.environment import fingerprint

        self.cache: dict[str, Any] = {}
        self.environment = fingerprint()
        self.node = node_label()

    def describe(self) -> dict[str, Any]:
        """Where this worker runs."""
        import os

        return {"node": self.node, "pid": os.getpid(), **self.environment}

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` here: how a job kind asks about the machine that measures."""
        return fn()

    def measure_many(
        self, kind: JobKind, spec: JobSpec, items: list[tuple[dict[str, Any], Built]]
    ) -> list[Outcome]:
        """Measure a chunk of built candidates one after another."""
        return [self.measure(kind, spec, params, built) for params, built in items]

    def measure(
        self, kind: JobKind, spec: JobSpec, params: dict[str, Any], built: Built
    ) -> Outcome:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            result = kind.measure(spec, params, built, self.cache)
        except Exception as exc:
            status, error = _failure(exc)
            return Outcome(
                status,
                time.perf_counter() - t0,
                self.node,
                started,
                error=error,
                environment=self.environment,
            )
        seconds = time.perf_counter() - t0
        if not result.latencies_s:
            return Outcome(
                TrialStatus.run_error,
                seconds,
                self.node,
                started,
                error="the measurement returned no latencies",
                environment=self.environment,
            )
        return Outcome(
            TrialStatus.ok,
            seconds,
            self.node,
            started,
            latencies_s=result.latencies_s,
            info=result.info,
            environment=self.environment,
        )
