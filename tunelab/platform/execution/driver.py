"""The job driver: asks the strategy for candidates, builds and evaluates them on Ray,
records every result.

Builds are CPU tasks on any node. Evaluations go to evaluation workers (Ray actors)
placed as the kind asks. Every deadline is kept by the driver: a build or evaluation that
outlives its timeout is killed and recorded as `timeout`; a worker that dies (or, for a
long-running evaluation, stops beating) is retried on a fresh one up to `max_attempts`
times and then recorded as `worker_lost`. Nothing is recorded twice.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from tunelab.platform import artifacts, jobs, kind_data
from tunelab.platform.execution import finals
from tunelab.platform.execution.assembly import Pending, Result, trial_fields
from tunelab.platform.execution.chunking import Chunker
from tunelab.platform.execution.liveness import Heartbeat, Interrupts, await_hand_over
from tunelab.platform.execution.pool import (
    POLL_S,
    EvalPool,
    JobError,
    Stopped,
    Worker,
    connect_ray,
)
from tunelab.platform.kinds import JobKind, WorkerAccess, candidate_key, get_kind
from tunelab.platform.objectives import better
from tunelab.platform.outage import DatabaseOutage, Outage
from tunelab.platform.recorder import Recorder
from tunelab.platform.search.priors import PriorTrial, read_priors
from tunelab.platform.search.space import Space, as_space
from tunelab.platform.search.strategies import SearchStrategy, make_strategy
from tunelab.platform.spec import JobSpec, SpecError, parse_spec
from tunelab.platform.steps import StepWriter
from tunelab.schema.models import Job, JobStatus, Trial, TrialStatus
from tunelab.workers.context import JobHandle
from tunelab.workers.tasks import EvalItem, Outcome, build_candidates

__all__ = ["JobError", "JobRunner", "Progress", "run_job"]

log = logging.getLogger(__name__)

# Time allowed on top of a timeout for dispatch and worker start-up.
GRACE_S = 5.0
CANCEL_CHECK_S = 1.0
HEARTBEAT_CHECK_S = 2.0
INTERRUPTED_TRIAL = "running when an earlier driver was lost: run again on resume"
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"


@dataclass
class Progress:
    """What a progress display needs after each recorded trial."""

    done: int
    total: int
    ok: int
    best: float | None
    objective: str = "latency_s"


class DriverContext:
    """What the driver offers a strategy: job-level steps, checkpoints and artifacts, each
    access riding out a database outage as the driver's own writes do (`outage`)."""

    def __init__(
        self, engine: Engine, job_id: int, keep_checkpoints: int, outage: Outage | None = None
    ) -> None:
        self.engine = engine
        self.job_id = job_id
        self.keep = keep_checkpoints
        self.steps = StepWriter(engine, job_id)
        self.outage = outage or Outage.for_job(engine, job_id)

    def report(self, step: int, metrics: dict[str, Any], series: str = "") -> None:
        # Buffered until the next checkpoint (or the end): a resumed strategy reports
        # the steps after its checkpoint again, and the first report of a step wins.
        self.steps.add(step, metrics, series)

    def save_checkpoint(self, step: int, data: bytes) -> None:
        retry = self.outage.retry
        retry(self.steps.flush)  # the steps a checkpoint covers are recorded before it
        retry(artifacts.save_checkpoint, self.engine, self.job_id, step, data, keep_last=self.keep)

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        info = self.outage.retry(artifacts.latest_checkpoint, self.engine, self.job_id)
        if info is None or info.step is None:
            return None
        return info.step, self.outage.retry(artifacts.read_blob, self.engine, info.hash)

    def save_artifact(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> str:
        info = self.outage.retry(
            artifacts.save_artifact, self.engine, self.job_id, name, data, meta=meta
        )
        return info.hash

    def load_artifact(self, ref: str) -> bytes:
        info = self.outage.retry(artifacts.get_artifact, self.engine, ref)
        return self.outage.retry(artifacts.read_blob, self.engine, info.hash)


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
        self.outage = Outage.for_job(engine, job_id)  # rides out a database that goes away

    def run(
        self, *, ray_address: str | None = None, force: bool = False, retry_failed: bool = False
    ) -> JobStatus:
        # SIGTERM ends the driver as interrupted from here on, whatever it is doing
        # (execution/liveness.py), and its heartbeat beats from the claim on.
        with Interrupts() as interrupts:
            before = jobs.get_job(self.engine, self.job_id) if force else None
            job = jobs.claim(self.engine, self.job_id, force=force, retry_failed=retry_failed)
            self.lease = job.lease
            self.decided = job.verdict is not None  # an earlier run's final rounds named it
            finish = functools.partial(jobs.finish, self.engine, self.job_id, lease=self.lease)
            interrupts.on_stuck = functools.partial(finish, JobStatus.interrupted, INTERRUPTED)
            heartbeat = Heartbeat(self.engine, self.job_id, self.lease).start()
            try:
                return self._claimed(job, before, interrupts, finish, ray_address, retry_failed)
            finally:
                heartbeat.stop()

    def _claimed(
        self, job: Job, before: Job | None, interrupts: Interrupts,
        finish: Callable[..., None], ray_address: str | None, retry_failed: bool,
    ) -> JobStatus:  # fmt: skip
        """Run the claimed job; whatever stops it is recorded on the job."""
        try:
            if before is not None:
                await_hand_over(before, self.job_id)
            try:
                spec = parse_spec(job.spec, f"job {self.job_id}")
                kind = get_kind(spec.kind)
            except (SpecError, KeyError) as exc:  # e.g. a kind changed or gone since
                raise JobError(f"its spec no longer holds: {exc.args[0]}") from None
            try:
                connect_ray(ray_address)
            except SystemExit as exc:  # Ray's own SIGTERM handler, set while it starts
                interrupts.acted()
                raise KeyboardInterrupt from exc
            interrupts.install()  # after Ray's start-up, which set its own
            status = self._run(spec, kind, retry_failed)
        except KeyboardInterrupt:
            self.outage.attempt(finish, JobStatus.interrupted, INTERRUPTED)
            raise
        except DatabaseOutage:  # nothing can be written: the job stays running, resumable
            raise
        except jobs.LostOwnership:
            raise  # the job is another driver's now: leave its record alone
        except Exception as exc:
            self.outage.retry(finish, JobStatus.failed, f"{type(exc).__name__}: {exc}")
            raise
        if status != JobStatus.cancelled:
            self.outage.retry(finish, status)
        return status

    def _interrupted(self) -> list[tuple[str, dict[str, Any]]]:
        """(candidate, params) of the job's `running` trials: an earlier run's, lost."""
        stmt = (
            select(Trial.candidate, Trial.params)
            .where(Trial.job_id == self.job_id, Trial.status == TrialStatus.running)
            .order_by(Trial.id)
        )
        with self.engine.connect() as conn:
            return [(key, params) for key, params in conn.execute(stmt)]

    def _priors(self, kind: JobKind) -> list[PriorTrial]:
        """Other workloads' trials for a strategy that warm-starts (read only if it does)."""
        priors = read_priors(self.engine, self.job_id, kind)
        log.info("job %s: warm start from %d trials of other workloads", self.job_id, len(priors))
        return priors

    def _run(self, spec: JobSpec, kind: JobKind, retry_failed: bool = False) -> JobStatus:
        context = DriverContext(
            self.engine, self.job_id, spec.measure.keep_checkpoints, self.outage
        )
        space = as_space(kind.space(spec))
        pool: EvalPool | None = None
        try:
            if not spec.measure.build_only:
                # The workers first: what they say (the measuring node's CPU, its
                # calibration) reaches the model features the strategy ranks by.
                # A queued job says what it waits for (`waiting for resources`).
                waiting = functools.partial(
                    self.outage.retry, jobs.note_waiting, self.engine, self.job_id, self.lease
                )
                try:
                    pool = EvalPool(
                        kind, kind.resources(spec), f"this {kind.name} job",
                        spec.measure.threads, on_wait=waiting,
                    )  # fmt: skip
                except Stopped:  # cancelled while queued: nothing to record
                    return JobStatus.cancelled
                spec = self._resolve(spec, kind, pool)
            return self._search(spec, kind, space, context, pool, retry_failed)
        finally:
            if pool is not None:
                pool.shutdown()
            self.outage.retry(context.steps.flush)

    def _resolve(self, spec: JobSpec, kind: JobKind, pool: EvalPool) -> JobSpec:
        """The spec as the kind resolves it on a worker, with the kind's data at hand."""
        access = WorkerAccess(
            pool.run_on_worker,
            lambda key: self.outage.retry(kind_data.get, self.engine, kind.name, key),
            lambda key, value: self.outage.retry(kind_data.put, self.engine, kind.name, key, value),
        )  # fmt: skip
        try:
            resolved = kind.resolve_spec(spec, access)
        except ValueError as exc:  # known only once the workers are: say so, build nothing
            raise JobError(str(exc)) from None
        if resolved.target != spec.target:
            # Kept on the job: its sweep file, replays and warm starts model the machine
            # that measured (its calibration), not whichever one reads the job later; a
            # resume keeps the same numbers, so the model ranks alike across runs.
            self.outage.retry(self._keep_spec, resolved)
        return resolved

    def _keep_spec(self, spec: JobSpec) -> None:
        stmt = (
            update(Job)
            .where(Job.id == self.job_id, Job.lease == self.lease)
            .values(spec=spec.model_dump(mode="json"))
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def _search(
        self, spec: JobSpec, kind: JobKind, space: Space, context: DriverContext,
        pool: EvalPool | None, retry_failed: bool,
    ) -> JobStatus:  # fmt: skip
        try:
            strategy = make_strategy(
                space, spec.search, lambda p: kind.model_features(spec, p), kind=kind,
                direction=kind.primary().direction, context=context,
                priors=functools.partial(self._priors, kind),
            )  # fmt: skip
        except ValueError as exc:
            raise JobError(str(exc)) from None
        recorded = jobs.recorded(self.engine, self.job_id, retry_failed=retry_failed)
        done = {key for key, _, _ in recorded}
        for key, value, params in recorded:  # a resumed strategy learns from these
            strategy.tell(key, value, params)
        # Trials an earlier run left `running` (its driver was lost): run again first,
        # under the same keys, their rows replaced by the results; none stays running.
        interrupted = self._interrupted()
        for key, params in interrupted:
            strategy.resumed(key, params)
        retry = jobs.retryable(self.engine, self.job_id) if retry_failed else []
        baselines = [(candidate_key(p), p) for p in kind.baselines(spec)]
        total = strategy.total + len(baselines)
        with self.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == self.job_id).values(n_planned=total))
        recorder = Recorder(
            self.engine, self.job_id, objective=kind.primary(), lease=self.lease,
            replace={key for key, _, _ in retry} | {key for key, _ in interrupted},
            outage=self.outage,
        )  # fmt: skip
        recorder.decided = self.decided
        recorder.flush()  # counts and heartbeat as of now
        if len(done) >= total:
            return JobStatus.completed

        state: _LoopState | None = None
        try:
            state = _LoopState(self, spec, kind, strategy, done, recorder, pool)
            # Progress counts what earlier runs recorded too.
            state.ok = sum(value is not None for _, value, _ in recorded)
            direction = kind.primary().direction
            for _, value, params in recorded:
                if "baseline" not in params and better(value, state.best, direction):
                    state.best = value
            again = {k for k, _, _ in retry}
            state.baselines = [(k, p) for k, p, _ in retry] + interrupted
            again |= {k for k, _ in interrupted}
            state.baselines += [(k, p) for k, p in baselines if k not in done | again]
            state.earlier = {k: [f"before --retry-failed: {e}"] for k, _, e in retry if e}
            state.earlier |= {k: [INTERRUPTED_TRIAL] for k, _ in interrupted}
            state.total = total
            status = state.loop()
            if status == JobStatus.completed and finals.wanted(state):
                finals.run(state)
            return status
        finally:
            if state is not None:
                state.stop()
            try:
                recorder.drain()
            except jobs.LostOwnership:
                n = recorder.hand_over()  # what this driver measured is not thrown away
                log.warning("job %s: taken over by another driver; recorded the %d results "
                            "measured here that it had not", self.job_id, n)  # fmt: skip
                raise


@dataclass
class _Build:
    chunk: list[Pending]
    started: float
    node: str | None = None  # where it runs, when the driver placed it


@dataclass
class _Evaluation:
    chunk: list[Pending]
    worker: Worker
    started: float


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
        pool: EvalPool | None,
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
        self.objective = kind.primary()
        self.in_flight: set[str] = set()
        self.retry: deque[Pending] = deque()  # lost builds and split chunks, first
        self.to_measure: deque[Pending] = deque()
        self.builds: dict[Any, _Build] = {}
        self.measures: dict[Any, _Evaluation] = {}
        self.build_chunk = Chunker()
        self.measure_chunk = Chunker(fixed=1 if kind.long_running else None)
        self.ok = 0
        self.best: float | None = None
        self.spec_ref = ray.put(spec)
        self.kind_ref = ray.put(kind)
        engine = runner.engine
        self.job = JobHandle(
            db_url=engine.url.render_as_string(hide_password=False),
            job_id=runner.job_id,
            kind=kind.name,
            keep_checkpoints=spec.measure.keep_checkpoints,
            run_timeout_s=spec.measure.run_timeout_s,
        )
        self.job_ref = ray.put(self.job)
        resources = kind.resources(spec)
        self.has_build = kind.has_build() and resources.build is not None
        build_options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        wanted = resources.build or {}
        if wanted and all(ray.cluster_resources().get(r) for r in wanted):
            build_options["resources"] = dict(wanted)  # e.g. nodes offering nvcc
        self.build_fn = ray.remote(**build_options)(build_candidates)
        # Node placement measures with the whole node: no build runs on a node while it
        # measures there, and a node with measurements waiting takes no new builds.
        self.exclusive = pool is not None and resources.evaluate == "node"
        self.gone_nodes: set[str] = set()  # nodes a pinned build found gone
        cpus = int(ray.cluster_resources().get("CPU", 0))
        held = pool.cpus() if pool else 0
        self.build_slots = int(cpus - held)
        if self.has_build and self.build_slots < 1:
            raise JobError(
                f"the Ray cluster has {cpus} CPUs and its {pool.size() if pool else 0} "
                f"evaluation workers hold {held:g}: no CPU is left for builds; give worker "
                "nodes at least 2 CPUs"
            )
        self.exhausted = False
        # Evaluated first, once: lost/timed-out candidates run again, then baselines.
        self.baselines: list[tuple[str, dict[str, Any]]] = []
        self.earlier: dict[str, list[str]] = {}  # errors of earlier runs, by candidate
        self.total = strategy.total
        self._beat_checked = time.monotonic()

    # -- dispatch ----------------------------------------------------------------------

    def _take(self, n: int) -> list[Pending]:
        """Up to `n` candidates to build: retries first (a solo one alone), then new ones."""
        if self.retry:
            if self.retry[0].solo:
                return [self.retry.popleft()]
            out: list[Pending] = []
            while self.retry and not self.retry[0].solo and len(out) < n:
                out.append(self.retry.popleft())
            return out
        if self.exhausted:
            return []
        batch, self.baselines = self.baselines, []
        taken = self.done | self.in_flight | {key for key, _ in batch}
        batch += self.strategy.ask(max(n, self.spec.search.batch_size), taken)
        if not batch:
            # A strategy waiting for results in flight (a learner's batch of episodes)
            # is asked again later; otherwise the search is over.
            self.exhausted = not (self.strategy.waiting() and self.in_flight)
            return []
        items = [
            Pending(key, params, errors=list(self.earlier.get(key, ()))) for key, params in batch
        ]
        self.in_flight.update(key for key, _ in batch)
        self.retry.extend(items[n:])
        return items[:n]

    def _dispatch_builds(self) -> None:
        if not self.has_build:
            # Nothing to build: candidates go straight to evaluation, a little ahead of it.
            assert self.pool is not None, "a kind without a build step cannot be build-only"
            while len(self.to_measure) < 2 * self.pool.size() * self.measure_chunk.size + 2:
                chunk = self._take(self.measure_chunk.size)
                if not chunk:
                    return
                self.to_measure.extend(chunk)
            return
        # Build only a little ahead of evaluation: built artifacts wait in driver memory.
        # Never more build calls than build slots, so each starts when dispatched and its
        # deadline counts from then.
        while len(self.builds) < self.build_slots:
            if self.pool is not None:
                waiting = len(self.to_measure) + sum(len(b.chunk) for b in self.builds.values())
                if waiting >= 2 * self.pool.size() * self.measure_chunk.size + 2:
                    return
            node = self._build_node() if self.exclusive else None
            if self.exclusive and node is None:
                return  # every node measures or is about to
            chunk = self._take(self.build_chunk.size)
            if not chunk:
                return
            for item in chunk:
                item.attempts += 1
            fn = self.build_fn
            if node is not None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                fn = fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, False))
            ref = fn.remote(self.kind_ref, self.spec_ref, [i.params for i in chunk])
            self.builds[ref] = _Build(chunk, time.monotonic(), node)

    def _measuring_nodes(self) -> set[str | None]:
        return {EvalPool.node_of(ev.worker) for ev in self.measures.values()}

    def _build_node(self) -> str | None:
        """A node free to build on: not measuring, no measurement waiting for it, and
        with a CPU its worker does not hold; None if there is none now."""
        assert self.pool is not None
        busy = self._measuring_nodes()
        if self.to_measure:  # measurements go first on nodes with an idle worker
            busy |= {EvalPool.node_of(w) for w in self.pool.idle}
        building: dict[str, int] = {}
        for b in self.builds.values():
            if b.node is not None:
                building[b.node] = building.get(b.node, 0) + 1
        for node, cpus in list(self.pool.node_cpus.items()):
            slots = max(1, cpus - 1)  # its worker holds one
            if node in busy or node in self.gone_nodes or building.get(node, 0) >= slots:
                continue
            if self.pool.node_alive(node):
                return node
        return None

    def _dispatch_measures(self) -> None:
        assert self.pool is not None
        self.pool.poll_starting()
        while self.to_measure and (worker := self._free_worker()) is not None:
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
            if not self.has_build:
                for item in chunk:
                    item.attempts = max(item.attempts, 1)
            if self.kind.long_running:
                for item in chunk:
                    self.recorder.add_running(
                        candidate=item.key, params=item.params, attempts=item.attempts,
                        baseline=item.baseline,
                    )  # fmt: skip
                self.recorder.flush()  # the row exists before the worker beats on it
            items = [
                EvalItem(i.key, i.params, i.build.built if i.build else None, i.attempts)
                for i in chunk
            ]
            ref = worker.actor.measure_many.remote(
                self.kind_ref, self.spec_ref, self.job_ref, items
            )
            self.measures[ref] = _Evaluation(chunk, worker, time.monotonic())

    def _free_worker(self) -> Worker | None:
        """An idle worker, taken from the pool; with whole-node measurement, only one whose
        node runs no build."""
        assert self.pool is not None
        building = {b.node for b in self.builds.values()} if self.exclusive else set()
        for worker in self.pool.idle:
            if EvalPool.node_of(worker) not in building:
                self.pool.idle.remove(worker)
                return worker
        return None

    # -- results -----------------------------------------------------------------------

    def _record(self, item: Pending, result: Result) -> None:
        value = result.value(self.objective.name)
        evaluation = result.evaluation
        self.strategy.tell_result(
            item.key, value, item.params,
            info=dict(evaluation.info) if evaluation else {},
            payload=evaluation.payload if evaluation else None,
        )  # fmt: skip
        fields = trial_fields(item, result, self.strategy.prediction(item.key))
        self.recorder.add(**fields)
        self.in_flight.discard(item.key)
        self.done.add(item.key)
        if result.status == TrialStatus.ok:
            self.ok += 1
            if item.baseline is None and better(value, self.best, self.objective.direction):
                self.best = value
        self.runner.on_progress(
            Progress(len(self.done), self.total, self.ok, self.best, self.objective.name)
        )

    def _split(self, chunk: list[Pending], phase: str, why: str) -> None:
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

    def _lost(self, item: Pending, phase: str, why: str, how: str = "died") -> None:
        """The worker died (or went silent) under this candidate: try again, or give up."""
        message = f"{phase} worker {how} (attempt {item.attempts}): {why}"
        log.warning("job %s candidate %s: %s", self.runner.job_id, item.key, message)
        item.errors.append(message[:2000])
        if item.attempts < self.spec.measure.max_attempts:
            if phase == "measure":  # evaluate again from the same build
                item.attempts += 1
                self.to_measure.appendleft(item)
            else:  # build again (dispatch counts the attempt)
                self.retry.appendleft(item)
        else:
            self._record(item, Result(TrialStatus.worker_lost, item.build, error=message))

    def _collect_builds(self, ready: set[Any]) -> None:
        now = time.monotonic()
        for ref, b in list(self.builds.items()):
            chunk = b.chunk
            limit = len(chunk) * self.spec.measure.build_timeout_s + GRACE_S
            if ref in ready:
                del self.builds[ref]
                try:
                    outcomes: list[Outcome] = self.ray.get(ref)
                except Exception as exc:
                    unschedulable = isinstance(exc, self.ray.exceptions.TaskUnschedulableError)
                    if b.node is not None and unschedulable:
                        # Its node left the cluster: build elsewhere, charging nothing.
                        self.gone_nodes.add(b.node)
                        for item in reversed(chunk):
                            item.attempts -= 1
                            self.retry.appendleft(item)
                        continue
                    if len(chunk) > 1:
                        self._split(chunk, "build", f"worker died: {type(exc).__name__}")
                    else:
                        self._lost(chunk[0], "build", f"{type(exc).__name__}: {exc}")
                    continue
                self.build_chunk.observe(outcomes)
                for item, outcome in zip(chunk, outcomes, strict=True):
                    item.build = outcome
                    if outcome.status != TrialStatus.built or self.pool is None:
                        self._record(item, Result(outcome.status, outcome))
                    else:
                        self.to_measure.append(item)
            elif now - b.started > limit:
                del self.builds[ref]
                self.ray.cancel(ref, force=True)
                if len(chunk) > 1:
                    self._split(chunk, "build", "timeout")
                    continue
                error = f"build exceeded {self.spec.measure.build_timeout_s:g} s; worker killed"
                self._record(chunk[0], Result(TrialStatus.timeout, error=error))

    @property
    def _quiet_wait_s(self) -> float:
        """How long a worker may wait for a quiet node before each evaluation."""
        return self.spec.measure.quiet_wait_s or 0.0

    def _collect_measures(self, ready: set[Any]) -> None:
        assert self.pool is not None
        now = time.monotonic()
        silent = self._silent_evaluations(now)
        for ref, ev in list(self.measures.items()):
            chunk, worker = ev.chunk, ev.worker
            limit = len(chunk) * (self.spec.measure.run_timeout_s + self._quiet_wait_s) + GRACE_S
            if ref in ready:
                del self.measures[ref]
                try:
                    outcomes: list[Outcome] = self.ray.get(ref)
                except Exception as exc:
                    self.pool.replace(worker)
                    if len(chunk) > 1:
                        self._split(chunk, "measure", f"worker died: {type(exc).__name__}")
                    else:
                        self._lost(chunk[0], "measure", f"{type(exc).__name__}: {exc}")
                    continue
                self.pool.idle.append(worker)
                self.measure_chunk.observe(outcomes)
                for item, outcome in zip(chunk, outcomes, strict=True):
                    self._record(item, Result(outcome.status, item.build, outcome))
            elif now - ev.started > limit:
                del self.measures[ref]
                self.pool.replace(worker)
                if len(chunk) > 1:
                    self._split(chunk, "measure", "timeout")
                    continue
                error = f"run exceeded {self.spec.measure.run_timeout_s:g} s; worker killed"
                self._record(chunk[0], Result(TrialStatus.timeout, chunk[0].build, error=error))
            elif len(chunk) == 1 and chunk[0].key in silent:
                del self.measures[ref]
                self.pool.replace(worker)
                self._lost(
                    chunk[0], "measure",
                    f"no heartbeat for {self.spec.measure.heartbeat_timeout_s:g} s", "went silent",
                )  # fmt: skip

    def _silent_evaluations(self, now: float) -> set[str]:
        """Long-running evaluations in flight whose heartbeat is older than allowed."""
        if not self.kind.long_running or now - self._beat_checked < HEARTBEAT_CHECK_S:
            return set()
        self._beat_checked = now
        # Only evaluations that had time to beat since they were dispatched.
        timeout = self.spec.measure.heartbeat_timeout_s
        keys = [ev.chunk[0].key for ev in self.measures.values() if now - ev.started > timeout]
        # Workers cannot beat while the database is away: judge none until they could.
        if not keys or not self.runner.outage.settled(timeout):
            return set()
        cutoff = datetime.now(UTC) - timedelta(seconds=timeout)
        rows: Any = []
        with self.runner.outage.tolerate(), self.runner.engine.connect() as conn:
            rows = conn.execute(
                select(Trial.candidate, Trial.heartbeat_at).where(
                    Trial.job_id == self.runner.job_id,
                    Trial.status == TrialStatus.running,
                    Trial.candidate.in_(keys),
                )
            ).all()
        silent = set()
        for key, beat in rows:
            if beat is not None and beat.tzinfo is None:  # SQLite hands back naive datetimes
                beat = beat.replace(tzinfo=UTC)
            if beat is None or beat < cutoff:
                silent.add(key)
        return silent

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
                runner = self.runner  # a database away: not cancelled, as far as we know
                got = runner.outage.attempt(jobs.status_and_lease, runner.engine, runner.job_id)
                status, lease = got if got is not None else (None, runner.lease)
                if lease != runner.lease:
                    raise jobs.LostOwnership(
                        f"job {runner.job_id} was taken over by another driver: this one "
                        "records what it measured and stops"
                    )
                if status == JobStatus.cancelled:
                    return JobStatus.cancelled

    def stop(self) -> None:
        """Give up whatever is still in flight (on cancel or error): it is not recorded."""
        for ref in list(self.builds):
            self.ray.cancel(ref, force=True)
        for ev in list(self.measures.values()):
            self.ray.kill(ev.worker.actor, no_restart=True)
        self.builds.clear()
        self.measures.clear()


def run_job(
    engine: Engine,
    job_id: int,
    *,
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    force: bool = False,
    retry_failed: bool = False,
) -> JobStatus:
    """Run (or resume) job `job_id` in this process until it completes or is cancelled."""
    return JobRunner(engine, job_id, on_progress=on_progress).run(
        ray_address=ray_address, force=force, retry_failed=retry_failed
    )
