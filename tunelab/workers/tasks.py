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
from typing import TYPE_CHECKING, Any

from tunelab.platform.health import Guard, merge
from tunelab.platform.kinds import Built, CandidateError, Finalist, JobKind
from tunelab.platform.spec import JobSpec
from tunelab.schema.models import TrialStatus
from tunelab.workers.context import JobHandle, WorkerContext

if TYPE_CHECKING:
    from tunelab.platform.rounds import Rounds

_MAX_ERROR = 8000
REFERENCE = "reference"  # the reference's key in a kind's final rounds


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
    objectives: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    payload: Any = None  # for the strategy only (Measurement.payload): never recorded
    health: dict[str, Any] | None = None  # the node around an evaluation (health.merge)


@dataclass(frozen=True)
class EvalItem:
    """One candidate sent to an evaluation worker."""

    key: str
    params: dict[str, Any]
    built: Built | None
    attempt: int


def _spread(out: Outcome) -> float:
    """Slowest / fastest timed repeat of an outcome (1.0 without two repeats)."""
    xs = out.latencies_s or []
    if out.status != TrialStatus.ok or len(xs) < 2 or min(xs) <= 0:
        return 1.0
    return max(xs) / min(xs)


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


def worker_environment(kind: JobKind | None, threads: int | None) -> dict[str, Any]:
    """The environment a measuring worker records with each of its trials: the machine,
    the kind's libraries and the thread settings (its fingerprint keys per-node data)."""
    from tunelab.workers import threads as thread_policy
    from tunelab.workers.environment import fingerprint

    details = {**(kind.environment() if kind is not None else {})}
    return fingerprint(details | thread_policy.describe(threads))


class MeasureWorker:
    """Holds one device (a CPU node, one GPU, or a slot of a pool) and evaluates
    candidates one at a time."""

    def __init__(self, kind: JobKind | None = None, threads: int | None = None) -> None:
        from tunelab.workers import threads as thread_policy

        if threads is not None:
            thread_policy.apply(threads)
        self.cache: dict[str, Any] = {}
        self.environment = worker_environment(kind, threads)
        self.node = node_label()
        self.guard: Guard | None = None  # the node-health guard (spec.measure.quiet_wait_s)

    def describe(self) -> dict[str, Any]:
        """Where this worker runs."""
        import os

        return {"node": self.node, "pid": os.getpid(), **self.environment}

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` here: how a job kind asks about the machine that measures."""
        return fn()

    def measure_many(
        self, kind: JobKind, spec: JobSpec, job: JobHandle, items: list[EvalItem]
    ) -> list[Outcome]:
        """Evaluate a chunk of candidates one after another."""
        return [self.measure(kind, spec, job, item) for item in items]

    def time_rounds(
        self, kind: JobKind, spec: JobSpec, job: JobHandle, finalists: list[Finalist], *,
        rounds: int, seed: int = 0,
    ) -> tuple[Rounds, str]:  # fmt: skip
        """A kind's final rounds (`JobKind.final_runs`): every finalist and the reference
        (key `REFERENCE`) timed here in `rounds` paired rounds, order shuffled each round,
        each round after the node-health guard's bounded wait for quiet (its record is the
        round's note); returns the per-round seconds and this worker's node."""
        from tunelab.platform.rounds import interleaved

        guard = self.watch(spec)

        ctx = WorkerContext(job, "final-rounds", cache=self.cache)
        try:
            made = kind.final_runs(spec, finalists, ctx)
        finally:
            ctx.close()
        if REFERENCE in made.runs:
            raise ValueError(f"a finalist cannot be called {REFERENCE!r}")
        timed = interleaved(
            {**made.runs, REFERENCE: made.reference},
            rounds=rounds,
            min_sample_s=made.min_sample_s,
            seed=seed,
            sync=made.sync or (lambda: None),
            before_round=(lambda _r: merge([guard.check()])) if guard is not None else None,
        )
        return timed, self.node

    def watch(self, spec: JobSpec) -> Guard | None:
        """This worker's node-health guard for `spec` (None: the node is not watched)."""
        wait = getattr(spec.measure, "quiet_wait_s", None)
        if wait is None:
            return None
        key = (wait, spec.measure.busy_per_core)
        if self.guard is None or (self.guard.max_wait_s, self.guard.busy_per_core) != key:
            self.guard = Guard(*key)
        return self.guard

    def measure(self, kind: JobKind, spec: JobSpec, job: JobHandle, item: EvalItem) -> Outcome:
        """Evaluate one candidate, the node sampled before (after a bounded wait for quiet)
        and after: `Outcome.health` says whether it was measured on a busy node."""
        guard = self.watch(spec)
        before = guard.check() if guard is not None else None
        out = self._evaluate(kind, spec, job, item)
        gate = getattr(spec.measure, "gate_spread", None)
        if gate is not None and _spread(out) > gate:
            out = self._gated(kind, spec, job, item, out, gate, guard)
        if guard is not None:
            out.health = merge([before, out.health, guard.after()])
        return out

    def _gated(
        self, kind: JobKind, spec: JobSpec, job: JobHandle, item: EvalItem, first: Outcome,
        gate: float, guard: Guard | None,
    ) -> Outcome:  # fmt: skip
        """The noise gate: measure again (each time after the guard's wait for quiet) while
        the repeats spread more than `gate`, at most `gate_retries` times; keep the
        measurement with the smallest spread and every spread seen. A wrong or failing
        re-measurement ends the gate with that outcome: never a winner."""
        spreads, best, healths = [_spread(first)], first, []
        for _ in range(spec.measure.gate_retries):
            if guard is not None:
                healths.append(guard.check())
            again = self._evaluate(kind, spec, job, item)
            if again.status != TrialStatus.ok:
                return again
            spreads.append(_spread(again))
            if spreads[-1] < _spread(best):
                best = again
            if spreads[-1] <= gate:
                break
        best.info = {**best.info, "gate": {"limit": gate, "spreads": [round(x, 3) for x in spreads],
                                           "remeasured": len(spreads) - 1}}  # fmt: skip
        best.health = merge(healths) if healths else None
        return best

    def _evaluate(self, kind: JobKind, spec: JobSpec, job: JobHandle, item: EvalItem) -> Outcome:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        ctx = WorkerContext(
            job, item.key, attempt=item.attempt, cache=self.cache, heartbeat=kind.long_running
        )
        try:
            try:
                result = kind.measure(spec, item.params, item.built or Built(b""), ctx)
            finally:
                ctx.close()
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
        if not result.latencies_s and not result.objectives:
            return Outcome(
                TrialStatus.run_error,
                seconds,
                self.node,
                started,
                error="the evaluation returned neither latencies nor objective values",
                environment=self.environment,
            )
        return Outcome(
            TrialStatus.ok,
            seconds,
            self.node,
            started,
            latencies_s=result.latencies_s,
            objectives=dict(result.objectives),
            info=result.info,
            environment=self.environment,
            payload=result.payload,
        )
