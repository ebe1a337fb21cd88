"""The job driver: plans candidates, runs builds and measurements on Ray, records results.

Builds are CPU tasks on any node. Measurements go to measurement workers (Ray actors)
that each hold a device alone: one per node on the CPU backend, one per GPU on CUDA.
Every deadline is kept by the driver: a build or measurement that outlives its timeout
is killed and recorded as `timeout`; a worker that dies is retried on a fresh one up to
`max_attempts` times and then recorded as `worker_lost`. Nothing is recorded twice.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, update

from tunelab.platform import jobs
from tunelab.platform.kinds import JobKind, candidate_key, get_kind
from tunelab.platform.recorder import Recorder
from tunelab.platform.spec import JobSpec, parse_spec
from tunelab.platform.strategies import SearchStrategy, make_strategy
from tunelab.schema.models import Job, JobStatus, TrialStatus
from tunelab.workers.tasks import MeasureWorker, Outcome, build_candidates

log = logging.getLogger(__name__)

# Time allowed on top of a timeout for dispatch and worker start-up.
GRACE_S = 5.0
# How long new measurement workers may take to start.
WORKER_START_TIMEOUT_S = 180.0
POLL_S = 0.05
CANCEL_CHECK_S = 1.0


class JobError(RuntimeError):
    """The job cannot run (no device for it, nothing to run); it is marked failed."""


@dataclass
class Progress:
    """What a progress display needs after each recorded trial."""

    done: int
    total: int
    ok: int
    best_s: float | None


@dataclass
class _Pending:
    key: str
    params: dict[str, Any]
    attempts: int = 0
    build: Outcome | None = None
    errors: list[str] = field(default_factory=list)
    solo: bool = False  # its chunk failed as a whole: evaluate it alone from now on


def connect_ray(address: str | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    from tunelab.config import resolve_ray_address

    address = resolve_ray_address(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(configure_logging=False, **kwargs)


class MeasurePool:
    """Measurement workers, each measuring one candidate at a time under a deadline.

    On the CPU backend each worker is pinned to its node; a worker whose node has died is
    not replaced (the pool shrinks and the job goes on with the nodes that are left).
    """

    NODE_CHECK_S = 1.0

    def __init__(self, spec: JobSpec) -> None:
        import ray

        self.ray = ray
        self.spec = spec
        self.cls = ray.remote(MeasureWorker)
        self.idle: deque[Any] = deque()
        # ready-ref -> (actor, options, started at)
        self.starting: dict[Any, tuple[Any, dict[str, Any], float]] = {}
        self._alive: set[str] = set()
        self._alive_at = 0.0
        placements = self._placements()
        self.n_workers = len(placements)
        if not placements:
            raise JobError("the Ray cluster has no node with a CPU for measurements")
        for options in placements:
            self._start(options)

    def _placements(self) -> list[dict[str, Any]]:
        ray = self.ray
        if self.spec.target.kind == "cuda":
            gpus = int(ray.cluster_resources().get("GPU", 0))
            if gpus == 0:
                raise JobError(
                    "this cuda job measures on GPUs but the Ray cluster has none; "
                    "join a cluster with GPU workers, or set measure.build_only: true "
                    "to compile every candidate without measuring"
                )
            return [{"num_gpus": 1, "num_cpus": 1} for _ in range(gpus)]
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        return [
            {
                "num_cpus": 1,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            }
            for n in nodes
        ]

    @staticmethod
    def _node(options: dict[str, Any]) -> str | None:
        strategy = options.get("scheduling_strategy")
        return getattr(strategy, "node_id", None)

    def _node_dead(self, options: dict[str, Any]) -> bool:
        node = self._node(options)
        if node is None:
            return False
        if time.monotonic() - self._alive_at > self.NODE_CHECK_S:
            self._alive = {n["NodeID"] for n in self.ray.nodes() if n["Alive"]}
            self._alive_at = time.monotonic()
        return node not in self._alive

    def _start(self, options: dict[str, Any]) -> None:
        actor = self.cls.options(max_restarts=0, **options).remote()
        self.starting[actor.describe.remote()] = (actor, options, time.monotonic())

    def _drop(self, options: dict[str, Any]) -> None:
        self.n_workers -= 1
        log.warning("node %s is gone: %d measurement workers left", self._node(options),
                    self.n_workers)  # fmt: skip
        if self.n_workers == 0:
            raise JobError("every node with a measurement worker has died")

    def replace(self, actor: Any, options: dict[str, Any]) -> None:
        """Kill `actor` (if still alive) and start a fresh worker in its place."""
        with contextlib.suppress(Exception):  # already dead
            self.ray.kill(actor, no_restart=True)
        self._alive_at = 0.0  # a worker died: look at the nodes afresh
        if self._node_dead(options):
            self._drop(options)
        else:
            self._start(options)

    def poll_starting(self) -> None:
        """Move workers that finished starting to the idle set; drop those of dead nodes."""
        if not self.starting:
            return
        ready, _ = self.ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
        for ref in ready:
            actor, options, _ = self.starting.pop(ref)
            try:
                self.ray.get(ref)  # raises if the worker died while starting
                self.idle.append((actor, options))
            except Exception as exc:  # died while starting
                log.warning("measurement worker failed to start: %s", exc)
                self.replace(actor, options)
        now = time.monotonic()
        for ref, (actor, options, t0) in list(self.starting.items()):
            if self._node_dead(options):
                del self.starting[ref]
                with contextlib.suppress(Exception):
                    self.ray.kill(actor, no_restart=True)
                self._drop(options)
            elif now - t0 > WORKER_START_TIMEOUT_S:
                raise JobError(
                    f"a measurement worker ({options}) did not start within "
                    f"{WORKER_START_TIMEOUT_S:.0f} s: does the cluster have room for it?"
                )

    def run_on_worker(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on one (idle) measurement worker and return its result."""
        self.wait_ready()
        actor, _ = self.idle[0]
        return self.ray.get(actor.call.remote(fn))

    def size(self) -> int:
        """How many measurement workers the pool keeps."""
        return self.n_workers

    def wait_ready(self) -> None:
        """Block until at least one measurement worker is idle."""
        while not self.idle:
            self.poll_starting()
            time.sleep(POLL_S)

    def shutdown(self) -> None:
        for actor, _ in list(self.idle):
            self.ray.kill(actor, no_restart=True)
        for actor, _, _ in self.starting.values():
            self.ray.kill(actor, no_restart=True)
        self.idle.clear()
        self.starting.clear()


class JobRunner:
    """Runs one job to its end (or until cancelled) from the state in the database."""

    def __init__(
        self,
        engine: Engine,
        job_id: int,
        *,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.engine = engine
        self.job_id = job_id
        self.on_progress = on_progress or (lambda _p: None)

    def run(self, *, ray_address: str | None = None, force: bool = False) -> JobStatus:
        job = jobs.claim(self.engine, self.job_id, force=force)
        spec = parse_spec(job.spec, f"job {self.job_id}")
        try:
            connect_ray(ray_address)
            status = self._run(spec, get_kind(spec.kind))
        except KeyboardInterrupt:
            jobs.finish(self.engine, self.job_id, JobStatus.interrupted, "interrupted by user")
            raise
        except Exception as exc:
            jobs.finish(self.engine, self.job_id, JobStatus.failed, f"{type(exc).__name__}: {exc}")
            raise
        if status != JobStatus.cancelled:
            jobs.finish(self.engine, self.job_id, status)
        return status

    # -- the loop -------------------------------------------------------------------------

    def _run(self, spec: JobSpec, kind: JobKind) -> JobStatus:
        strategy = make_strategy(
            kind.space(spec), spec.search, lambda p: kind.model_features(spec, p)
        )
        recorded = jobs.recorded_results(self.engine, self.job_id)
        done = set(recorded)
        for key, seconds in recorded.items():  # a resumed model strategy learns from these
            strategy.tell(key, seconds)
        baselines = [(candidate_key(p), p) for p in kind.baselines(spec)]
        total = strategy.total + len(baselines)
        with self.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == self.job_id).values(n_planned=total))
        recorder = Recorder(self.engine, self.job_id)
        recorder.flush()  # counts and heartbeat as of now
        if len(done) >= total:
            return JobStatus.completed

        pool: MeasurePool | None = None
        state: _LoopState | None = None
        try:
            if not spec.measure.build_only:
                pool = MeasurePool(spec)
                spec = kind.resolve_spec(spec, pool.run_on_worker)
            state = _LoopState(self, spec, kind, strategy, done, recorder, pool)
            state.baselines = [(k, p) for k, p in baselines if k not in done]
            state.total = total
            return state.loop()
        finally:
            if state is not None:
                state.stop()
            recorder.flush()
            if pool is not None:
                pool.shutdown()


class _Chunker:
    """How many candidates go into one Ray call for one phase.

    Cheap evaluations are sent in chunks so that Ray's per-call cost does not dominate;
    a chunk aims to take about TARGET_S. Expensive ones go one at a time, which keeps
    timeouts and crash blame per candidate. A chunk that fails as a whole is split.
    """

    TARGET_S = 0.2
    MAX = 64

    def __init__(self) -> None:
        self.size = 1

    def observe(self, outcomes: list[Outcome]) -> None:
        per = sum(o.seconds for o in outcomes) / max(len(outcomes), 1)
        self.size = max(1, min(self.MAX, int(self.TARGET_S / max(per, 1e-4))))

    def failed(self) -> None:
        self.size = 1


class _LoopState:
    """The driver's bookkeeping for one run of a job."""

    def __init__(
        self,
        runner: JobRunner,
        spec: JobSpec,
        kind: JobKind,
        strategy: SearchStrategy,
        done: set[str],
        recorder: Recorder,
        pool: MeasurePool | None,
    ) -> None:
        import ray

        self.ray = ray
        self.runner = runner
        self.spec = spec
        self.kind = kind
        self.strategy = strategy
        self.done = done
        self.recorder = recorder
        self.pool = pool
        self.in_flight: set[str] = set()
        self.retry: deque[_Pending] = deque()  # lost builds and split chunks, first
        self.to_measure: deque[_Pending] = deque()
        self.builds: dict[Any, tuple[list[_Pending], float]] = {}
        self.measures: dict[Any, tuple[list[_Pending], Any, dict[str, Any], float]] = {}
        self.build_chunk = _Chunker()
        self.measure_chunk = _Chunker()
        self.ok = 0
        self.best: float | None = None
        self.spec_ref = ray.put(spec)
        self.kind_ref = ray.put(kind)
        build_options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if spec.target.kind == "cuda" and ray.cluster_resources().get("nvcc"):
            # Nodes with the CUDA toolkit say so with an `nvcc` resource: build there.
            build_options["resources"] = {"nvcc": 1}
        self.build_fn = ray.remote(**build_options)(build_candidates)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.build_slots = cpus - (pool.size() if pool else 0)
        if self.build_slots < 1:
            raise JobError(
                f"the Ray cluster has {cpus} CPUs and {pool.size() if pool else 0} measurement "
                "workers (one CPU each): no CPU is left for builds; give worker nodes at "
                "least 2 CPUs"
            )
        self.exhausted = False
        self.baselines: list[tuple[str, dict[str, Any]]] = []  # measured first, once
        self.total = strategy.total

    # -- dispatch ----------------------------------------------------------------------

    def _take(self, n: int) -> list[_Pending]:
        """Up to `n` candidates to build: retries first (a solo one alone), then new ones."""
        if self.retry:
            if self.retry[0].solo:
                return [self.retry.popleft()]
            out: list[_Pending] = []
            while self.retry and not self.retry[0].solo and len(out) < n:
                out.append(self.retry.popleft())
            return out
        if self.exhausted:
            return []
        batch, self.baselines = self.baselines, []
        batch += self.strategy.propose(
            max(n, self.spec.search.batch_size), self.done | self.in_flight
        )
        if not batch:
            self.exhausted = True
            return []
        items = [_Pending(key, params) for key, params in batch]
        self.in_flight.update(key for key, _ in batch)
        self.retry.extend(items[n:])
        return items[:n]

    def _dispatch_builds(self) -> None:
        # Build only a little ahead of measurement: built artifacts wait in driver memory.
        # Never more build calls than build slots, so each starts when dispatched and its
        # deadline counts from then.
        while len(self.builds) < self.build_slots:
            if self.pool is not None:
                waiting = len(self.to_measure) + sum(len(c) for c, _ in self.builds.values())
                if waiting >= 2 * self.pool.size() * self.measure_chunk.size + 2:
                    return
            chunk = self._take(self.build_chunk.size)
            if not chunk:
                return
            for item in chunk:
                item.attempts += 1
            ref = self.build_fn.remote(self.kind_ref, self.spec_ref, [i.params for i in chunk])
            self.builds[ref] = (chunk, time.monotonic())

    def _dispatch_measures(self) -> None:
        assert self.pool is not None
        self.pool.poll_starting()
        while self.to_measure and self.pool.idle:
            if self.to_measure[0].solo:
                chunk = [self.to_measure.popleft()]
            else:
                chunk = []
                while (
                    self.to_measure
                    and not self.to_measure[0].solo
                    and len(chunk) < self.measure_chunk.size
                ):
                    chunk.append(self.to_measure.popleft())
            actor, options = self.pool.idle.popleft()
            items = [(i.params, i.build.built) for i in chunk if i.build is not None]
            ref = actor.measure_many.remote(self.kind_ref, self.spec_ref, items)
            self.measures[ref] = (chunk, actor, options, time.monotonic())

    # -- results -----------------------------------------------------------------------

    def _record(
        self,
        item: _Pending,
        outcome: Outcome | None,
        status: TrialStatus,
        error: str | None = None,
    ) -> None:
        build = item.build
        latencies = outcome.latencies_s if outcome else None
        measured = outcome is not None and outcome is not build
        extra = dict(build.info) if build else {}
        if measured:
            extra.update(outcome.info)
        if item.errors:
            extra["earlier_attempts"] = item.errors
        predicted = self.strategy.prediction(item.key)
        if predicted is not None:
            extra["model"], extra["model_version"] = predicted.model, predicted.version
        ok = status == TrialStatus.ok and bool(latencies)
        self.strategy.tell(item.key, statistics.median(latencies) if ok else None)
        self.recorder.add(
            candidate=item.key,
            params=item.params,
            status=status,
            latencies_s=latencies,
            build_s=build.seconds if build else None,
            run_s=outcome.seconds if measured else None,
            attempts=item.attempts,
            error=error if error is not None else (outcome.error if outcome else None),
            worker_node=outcome.node if outcome else None,
            environment=outcome.environment if outcome else None,
            predicted_cost=predicted.seconds if predicted is not None else None,
            extra=extra,
            started_at=build.started_at if build else None,
        )
        self.in_flight.discard(item.key)
        self.done.add(item.key)
        if status == TrialStatus.ok and latencies:
            self.ok += 1
            if "baseline" not in extra:
                median = statistics.median(latencies)  # as the recorder ranks trials
                self.best = median if self.best is None else min(self.best, median)
        elif status == TrialStatus.built:
            self.ok += 1
        self.runner.on_progress(Progress(len(self.done), self.total, self.ok, self.best))

    def _split(self, chunk: list[_Pending], phase: str, why: str) -> None:
        """A chunk failed as a whole: rerun each member alone, charging none of them."""
        (self.build_chunk if phase == "build" else self.measure_chunk).failed()
        note = f"{phase} of a chunk of {len(chunk)} candidates lost ({why}); rerun alone"
        log.warning("job %s: %s", self.runner.job_id, note)
        for item in reversed(chunk):
            item.solo = True
            item.errors.append(note[:2000])
            if phase == "build":
                item.attempts -= 1  # dispatch counts it again
                self.retry.appendleft(item)
            else:
                self.to_measure.appendleft(item)

    def _lost(self, item: _Pending, phase: str, exc: BaseException) -> None:
        """The worker process died under this candidate: try again, or give up."""
        message = f"{phase} worker died (attempt {item.attempts}): {type(exc).__name__}: {exc}"
        log.warning("job %s candidate %s: %s", self.runner.job_id, item.key, message)
        item.errors.append(message[:2000])
        if item.attempts < self.spec.measure.max_attempts:
            if phase == "measure":  # measure again from the same build
                item.attempts += 1
                self.to_measure.appendleft(item)
            else:  # build again (dispatch counts the attempt)
                self.retry.appendleft(item)
        else:
            self._record(item, None, TrialStatus.worker_lost, message)

    def _collect_builds(self, ready: set[Any]) -> None:
        now = time.monotonic()
        for ref, (chunk, t0) in list(self.builds.items()):
            limit = len(chunk) * self.spec.measure.build_timeout_s + GRACE_S
            if ref in ready:
                del self.builds[ref]
                try:
                    outcomes: list[Outcome] = self.ray.get(ref)
                except Exception as exc:
                    if len(chunk) > 1:
                        self._split(chunk, "build", f"worker died: {type(exc).__name__}")
                    else:
                        self._lost(chunk[0], "build", exc)
                    continue
                self.build_chunk.observe(outcomes)
                for item, outcome in zip(chunk, outcomes, strict=True):
                    item.build = outcome
                    if outcome.status != TrialStatus.built or self.pool is None:
                        self._record(item, outcome, outcome.status)
                    else:
                        self.to_measure.append(item)
            elif now - t0 > limit:
                del self.builds[ref]
                self.ray.cancel(ref, force=True)
                if len(chunk) > 1:
                    self._split(chunk, "build", "timeout")
                    continue
                self._record(
                    chunk[0], None, TrialStatus.timeout,
                    f"build exceeded {self.spec.measure.build_timeout_s:g} s; worker killed",
                )  # fmt: skip

    def _collect_measures(self, ready: set[Any]) -> None:
        assert self.pool is not None
        now = time.monotonic()
        for ref, (chunk, actor, options, t0) in list(self.measures.items()):
            limit = len(chunk) * self.spec.measure.run_timeout_s + GRACE_S
            if ref in ready:
                del self.measures[ref]
                try:
                    outcomes: list[Outcome] = self.ray.get(ref)
                except Exception as exc:
                    self.pool.replace(actor, options)
                    if len(chunk) > 1:
                        self._split(chunk, "measure", f"worker died: {type(exc).__name__}")
                    else:
                        self._lost(chunk[0], "measure", exc)
                    continue
                self.pool.idle.append((actor, options))
                self.measure_chunk.observe(outcomes)
                for item, outcome in zip(chunk, outcomes, strict=True):
                    self._record(item, outcome, outcome.status)
            elif now - t0 > limit:
                del self.measures[ref]
                self.pool.replace(actor, options)
                if len(chunk) > 1:
                    self._split(chunk, "measure", "timeout")
                    continue
                self._record(
                    chunk[0], None, TrialStatus.timeout,
                    f"run exceeded {self.spec.measure.run_timeout_s:g} s; worker killed",
                )  # fmt: skip

    # -- the loop ----------------------------------------------------------------------

    def busy(self) -> bool:
        return bool(self.builds or self.measures or self.to_measure or self.retry)

    def loop(self) -> JobStatus:
        last_check = time.monotonic()
        while True:
            self._dispatch_builds()
            if self.pool is not None:
                self._dispatch_measures()
            if not self.busy() and self.exhausted:
                return JobStatus.completed
            refs = list(self.builds) + list(self.measures)
            ready: set[Any] = set()
            if refs:
                done_refs, _ = self.ray.wait(refs, num_returns=1, timeout=POLL_S)
                if done_refs:  # take everything else that is ready too
                    more, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
                    ready = set(more) | set(done_refs)
            else:
                time.sleep(POLL_S)
            self._collect_builds(ready)
            if self.pool is not None:
                self._collect_measures(ready)
            if self.recorder.due():
                self.recorder.flush()
            if time.monotonic() - last_check >= CANCEL_CHECK_S:
                last_check = time.monotonic()
                if jobs.status_of(self.runner.engine, self.runner.job_id) == JobStatus.cancelled:
                    return JobStatus.cancelled

    def stop(self) -> None:
        """Give up whatever is still in flight (on cancel or error): it is not recorded."""
        for ref in list(self.builds):
            self.ray.cancel(ref, force=True)
        for _, actor, _, _ in list(self.measures.values()):
            self.ray.kill(actor, no_restart=True)
        self.builds.clear()
        self.measures.clear()


def run_job(
    engine: Engine,
    job_id: int,
    *,
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    force: bool = False,
) -> JobStatus:
    """Run (or resume) job `job_id` in this process until it completes or is cancelled."""
    return JobRunner(engine, job_id, on_progress=on_progress).run(
        ray_address=ray_address, force=force
    )
