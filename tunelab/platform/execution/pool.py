"""Evaluation workers on Ray, placed as the job's kind asks (`JobKind.resources`)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab.platform.kinds import JobKind, Resources

log = logging.getLogger(__name__)

# How long a new evaluation worker may take to start while the cluster has room for it,
# and how long one the cluster can never hold (more than its nodes offer) is waited for.
WORKER_START_TIMEOUT_S = 180.0
# How long a job waits for workers that the cluster could hold but other jobs hold now.
ENV_RESOURCE_WAIT_S = "TUNELAB_RESOURCE_WAIT_S"
DEFAULT_RESOURCE_WAIT_S = 24 * 3600.0
# How long a named cluster (--ray, RAY_ADDRESS) may take to answer before the job gives up.
ENV_CONNECT_TIMEOUT_S = "TUNELAB_RAY_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
POLL_S = 0.05
RESOURCE_CHECK_S = 1.0
WAITING = "waiting for resources"


class JobError(RuntimeError):
    """The job cannot run (no device for it, nothing to run); it is marked failed."""


class Stopped(JobError):
    """The job was cancelled (or taken over) while it waited for resources."""


class RayUnavailable(RuntimeError):
    """No Ray to run on: the cluster named cannot be reached, or none would start here.
    The job is left failed with the reason, and can be resumed."""


def _env_s(name: str, default: float) -> float:
    import os

    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def connect_ray(address: str | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else the Ray of this data directory
    (`tunelab cluster up`'s, or the warm local one, started when none runs: see
    platform/cluster.py). Raises RayUnavailable, in one line, when there is none to join."""
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return
    from tunelab.config import resolve_ray_address

    # Before Ray loads: it reads its token settings (which these set) on import.
    named = resolve_ray_address(address)
    if named:
        _reachable(named)
        _own_token(named)
        target = named
    else:
        target = _local_cluster()
    import ray

    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        hint = (
            "check --ray / RAY_ADDRESS (a cluster with token auth also needs RAY_AUTH_MODE="
            "token and its RAY_AUTH_TOKEN_PATH: `tunelab cluster env` prints them)"
            if named
            else "`tunelab cluster stop` and try again"
        )
        raise RayUnavailable(
            f"cannot join the Ray cluster at {target}: {type(exc).__name__}: {first}; {hint}"
        ) from None


def _reachable(address: str) -> None:
    """Raise RayUnavailable unless something listens at `address`'s host:port within
    TUNELAB_RAY_CONNECT_TIMEOUT_S (Ray itself would retry for minutes)."""
    import socket

    host_port = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    timeout_s = _env_s(ENV_CONNECT_TIMEOUT_S, DEFAULT_CONNECT_TIMEOUT_S)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
        if time.monotonic() > deadline:
            raise RayUnavailable(
                f"no Ray cluster answers at {address} ({why.lower()}, tried for "
                f"{timeout_s:g} s): check --ray / RAY_ADDRESS, or leave both unset to use "
                "a local Ray on this machine"
            )
        time.sleep(0.5)


def _own_token(address: str) -> None:
    """When `address` is this data directory's cluster: its token (unless one is set), and
    this process registered as its driver (the warm one's reaper then waits for it)."""
    import os

    from tunelab.platform import cluster

    state = cluster.load_state()
    if state is None or state.ray_address != address:
        return
    if "RAY_AUTH_MODE" not in os.environ:
        os.environ.update({k: v for k, v in state.env().items() if k.startswith("RAY_AUTH")})
    with contextlib.suppress(OSError):
        cluster.register_driver()


def _local_cluster() -> str:
    """The Ray address of this data directory's cluster (`tunelab cluster up`'s, else the
    warm local one, started if need be), its token put in this process's environment."""
    import os

    from tunelab.platform import cluster

    try:
        state = cluster.join_or_start()
    except cluster.ClusterError as exc:
        raise RayUnavailable(" ".join(str(exc).split())) from None
    os.environ.update({k: v for k, v in state.env().items() if k.startswith("RAY_AUTH")})
    log.info("using the Ray of %s: %s", cluster.state_dir(), state.ray_address)
    return state.ray_address


def _demand(options: dict[str, Any]) -> dict[str, float]:
    """The Ray resources a worker's options ask for."""
    need = {"CPU": float(options.get("num_cpus", 1) or 0)}
    if options.get("num_gpus"):
        need["GPU"] = float(options["num_gpus"])
    need.update(options.get("resources") or {})
    return {r: n for r, n in need.items() if n > 0}


def _fmt(have: dict[str, float], like: dict[str, float] | None = None) -> str:
    """`1 CPU, 1 GPU`: the resources of `have` named in `like` (all of them without it)."""
    keys = like or have
    return ", ".join(f"{have.get(r, 0):g} {r}" for r in keys) or "nothing"


def _threads(n: int) -> dict[str, Any]:
    """Actor options giving a worker `n` threads from its first import on."""
    from tunelab.workers.threads import thread_env

    return {"threads": n, "runtime_env": {"env_vars": thread_env(n)}}


@dataclass
class Worker:
    """An evaluation worker (a Ray actor) and the options it was placed with."""

    actor: Any
    options: dict[str, Any]


class EvalPool:
    """Evaluation workers, each evaluating one candidate at a time under a deadline.

    `node` placement pins one worker to each node (a worker whose node has died is not
    replaced: the pool shrinks and the job goes on with the nodes that are left) and
    measures with every core of it (or `threads`): the driver keeps builds off a node
    while it measures; `gpu` places one per GPU; `pool` runs `workers` of
    `evaluate_cpus` CPUs each anywhere. Each worker's threaded libraries get its thread
    count before they load (workers/threads.py).
    """

    NODE_CHECK_S = 1.0

    def __init__(
        self,
        kind: JobKind,
        resources: Resources,
        what: str = "this job",
        threads: int | None = None,
        on_wait: Callable[[str | None], bool | None] | None = None,
    ) -> None:
        import ray

        from tunelab.workers.tasks import MeasureWorker

        self.ray = ray
        self.kind = kind
        self.resources = resources
        self.what = what
        self.threads = threads
        self.node_cpus: dict[str, int] = {}
        self.cls = ray.remote(MeasureWorker)
        self.idle: deque[Worker] = deque()
        self.starting: dict[Any, tuple[Worker, float]] = {}  # ready-ref -> (worker, t0)
        self._alive: set[str] = set()
        self._alive_at = 0.0
        # Queueing: workers the cluster could hold but that other work holds now wait (up
        # to TUNELAB_RESOURCE_WAIT_S), told through `on_wait` (a note, None once placed).
        self.on_wait = on_wait
        self.resource_wait_s = _env_s(ENV_RESOURCE_WAIT_S, DEFAULT_RESOURCE_WAIT_S)
        self.queued: dict[Any, str] = {}  # ready-ref -> what it waits for
        self.queued_since: float | None = None
        self._checked_at = 0.0
        placements = self._placements()
        self.n_workers = len(placements)
        if not placements:
            raise JobError("the Ray cluster has no node with a CPU for evaluations")
        for options in placements:
            self._start(options)
        if on_wait is not None:  # a driver's pool: the job starts once it has a worker
            self.wait_ready()

    def _placements(self) -> list[dict[str, Any]]:
        ray, res = self.ray, self.resources
        if res.evaluate == "gpu":
            gpus = int(ray.cluster_resources().get("GPU", 0))
            if gpus == 0:
                raise JobError(
                    f"{self.what} evaluates on GPUs but the Ray cluster has none; join a "
                    "cluster with GPU workers, or set measure.build_only: true to build "
                    "every candidate without evaluating it"
                )
            return [{"num_gpus": 1, "num_cpus": 1, **_threads(self.threads or 1)}] * gpus
        if res.evaluate == "pool":
            cpus = ray.cluster_resources().get("CPU", 0)
            fits = int((cpus - 1) // res.evaluate_cpus) if cpus > res.evaluate_cpus else 1
            n = res.workers or max(1, fits)
            threads = self.threads or max(1, int(res.evaluate_cpus))
            return [{"num_cpus": res.evaluate_cpus, **_threads(threads)} for _ in range(n)]
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from tunelab.platform.cluster import MEASURE_RESOURCE

        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        placements = []
        for n in nodes:
            cpus = int(n["Resources"]["CPU"])
            if self.threads and self.threads > cpus:
                raise JobError(
                    f"measure.threads is {self.threads} but node {n['NodeManagerAddress']} has "
                    f"{cpus} CPUs: a measurement never oversubscribes its node"
                )
            self.node_cpus[n["NodeID"]] = cpus
            placement = {
                "num_cpus": 1,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                **_threads(self.threads or cpus),
            }
            if n["Resources"].get(MEASURE_RESOURCE):  # the node alone: other jobs queue
                placement["resources"] = {MEASURE_RESOURCE: 1}
            placements.append(placement)
        return placements

    @staticmethod
    def _node(options: dict[str, Any]) -> str | None:
        strategy = options.get("scheduling_strategy")
        return getattr(strategy, "node_id", None)

    def _node_dead(self, options: dict[str, Any]) -> bool:
        node = self._node(options)
        return node is not None and not self.node_alive(node)

    def _start(self, options: dict[str, Any]) -> None:
        opts = {k: v for k, v in options.items() if k != "threads"}
        actor = self.cls.options(max_restarts=0, **opts).remote(self.kind, options.get("threads"))
        self.starting[actor.describe.remote()] = (Worker(actor, options), time.monotonic())

    def node_alive(self, node: str) -> bool:
        """Whether `node` is still part of the cluster (checked at most every second)."""
        if time.monotonic() - self._alive_at > self.NODE_CHECK_S:
            self._alive = {n["NodeID"] for n in self.ray.nodes() if n["Alive"]}
            self._alive_at = time.monotonic()
        return node in self._alive

    def _drop(self, worker: Worker) -> None:
        self.node_cpus.pop(self._node(worker.options) or "", None)
        self.n_workers -= 1
        log.warning("node %s is gone: %d evaluation workers left", self._node(worker.options),
                    self.n_workers)  # fmt: skip
        if self.n_workers == 0:
            raise JobError("every node with an evaluation worker has died")

    def _kill(self, worker: Worker) -> None:
        with contextlib.suppress(Exception):  # already dead
            self.ray.kill(worker.actor, no_restart=True)

    def replace(self, worker: Worker) -> None:
        """Kill `worker` (if still alive) and start a fresh one in its place."""
        self._kill(worker)
        self._alive_at = 0.0  # a worker died: look at the nodes afresh
        if self._node_dead(worker.options):
            self._drop(worker)
        else:
            self._start(worker.options)

    def poll_starting(self) -> None:
        """Move workers that finished starting to the idle set; drop those of dead nodes;
        note those waiting for resources other work holds."""
        if not self.starting:
            self.queued.clear()
            self.queued_since = None
            return
        ready, _ = self.ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
        for ref in ready:
            worker, _ = self.starting.pop(ref)
            self.queued.pop(ref, None)
            try:
                self.ray.get(ref)  # raises if the worker died while starting
                self.idle.append(worker)
            except Exception as exc:  # died while starting
                log.warning("evaluation worker failed to start: %s", exc)
                self.replace(worker)
        now = time.monotonic()
        if now - self._checked_at < RESOURCE_CHECK_S:
            return
        self._checked_at = now
        free = total = None
        for ref, (worker, t0) in list(self.starting.items()):
            if self._node_dead(worker.options):
                del self.starting[ref]
                self.queued.pop(ref, None)
                self._kill(worker)
                self._drop(worker)
                continue
            if now - t0 < RESOURCE_CHECK_S:
                continue  # starting as usual
            if free is None:
                free, total = self._resources()
            need = _demand(worker.options)
            node = self._node(worker.options) or ""
            has, offers = free.get(node, free[""]), total.get(node, total[""])
            if any(offers.get(r, 0) < n for r, n in need.items()):
                self.queued.pop(ref, None)
                if now - t0 > WORKER_START_TIMEOUT_S:
                    raise JobError(
                        f"an evaluation worker needs {_fmt(need)} but the cluster "
                        f"{'node' if node else ''} offers {_fmt(offers, need)}: it can never "
                        f"be placed (waited {WORKER_START_TIMEOUT_S:.0f} s for a node to join)"
                    )
            elif any(has.get(r, 0) < n for r, n in need.items()):
                # Busy now, will free: not a slow start. Its clock starts once it has room.
                self.starting[ref] = (worker, now)
                self.queued[ref] = (
                    f"{_fmt(need)} each, {_fmt(has, need)} free of {_fmt(offers, need)}"
                )
            else:
                self.queued.pop(ref, None)
                if now - t0 > WORKER_START_TIMEOUT_S:
                    raise JobError(
                        f"an evaluation worker ({worker.options}) did not start within "
                        f"{WORKER_START_TIMEOUT_S:.0f} s although the cluster had room for it"
                    )
        if not self.queued:
            self.queued_since = None
            return
        self.queued_since = self.queued_since or now
        if now - self.queued_since > self.resource_wait_s:
            raise JobError(
                f"waited {self.resource_wait_s:g} s ({ENV_RESOURCE_WAIT_S}) for the cluster "
                f"to free room for the evaluation workers: {next(iter(self.queued.values()))}"
            )

    def waiting_for(self) -> str | None:
        """What the pool waits for while none of its workers could be placed, else None."""
        if self.idle or not self.queued or len(self.queued) < len(self.starting):
            return None
        n = len(self.queued)
        return (
            f"{WAITING}: {n} evaluation worker{'s' if n > 1 else ''} of "
            f"{next(iter(self.queued.values()))} (other jobs hold them)"
        )

    def _resources(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """Free and total resources by node id, the cluster's under ""."""
        ray = self.ray
        free: dict[str, dict[str, float]] = {"": dict(ray.available_resources())}
        total: dict[str, dict[str, float]] = {"": dict(ray.cluster_resources())}
        if self.node_cpus:  # pinned workers: what their own node has
            from ray._private import state

            with contextlib.suppress(Exception):  # an internal API: the cluster's as fallback
                free.update(state.available_resources_per_node())
            for n in ray.nodes():
                if n["Alive"]:
                    total[n["NodeID"]] = n["Resources"]
                    free.setdefault(n["NodeID"], {})
        return free, total

    def run_on_worker(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on one (idle) evaluation worker and return its result."""
        self.wait_ready()
        return self.ray.get(self.idle[0].actor.call.remote(fn))

    def size(self) -> int:
        """How many evaluation workers the pool keeps."""
        return self.n_workers

    @staticmethod
    def node_of(worker: Worker) -> str | None:
        """The node a worker is pinned to (node placement), else None."""
        return EvalPool._node(worker.options)

    def cpus(self) -> float:
        """CPUs the pool's workers hold."""
        per = self.resources.evaluate_cpus if self.resources.evaluate == "pool" else 1
        return self.n_workers * per

    def wait_ready(self) -> None:
        """Block until at least one evaluation worker is idle; while none can be placed,
        say so through `on_wait` every few seconds (it also keeps the job's heartbeat)."""
        said_at: float | None = None
        while not self.idle:
            self.poll_starting()
            note = self.waiting_for()
            if note and self.on_wait and (said_at is None or time.monotonic() - said_at > 5):
                if said_at is None:
                    log.info("%s", note)
                if self.on_wait(note) is False:
                    raise Stopped("cancelled (or taken over) while waiting for resources")
                said_at = time.monotonic()
            time.sleep(POLL_S)
        if said_at is not None and self.on_wait:
            self.on_wait(None)

    def shutdown(self) -> None:
        for worker in list(self.idle):
            self._kill(worker)
        for worker, _ in self.starting.values():
            self._kill(worker)
        self.idle.clear()
        self.starting.clear()
