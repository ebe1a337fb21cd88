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

# How long new evaluation workers may take to start.
WORKER_START_TIMEOUT_S = 180.0
POLL_S = 0.05


class JobError(RuntimeError):
    """The job cannot run (no device for it, nothing to run); it is marked failed."""


def connect_ray(address: str | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else the one `tunelab cluster up`
    runs from this data directory, else start Ray on this machine (its token notice
    silenced: the token stays on this machine)."""
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return
    from tunelab.config import resolve_ray_address

    # Before Ray loads: it reads its token settings (which _local_cluster sets) on import.
    address = resolve_ray_address(address) or _local_cluster()
    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = notice.level
        notice.setLevel(logging.ERROR)
        try:
            ray.init(configure_logging=False, **kwargs)
        finally:
            notice.setLevel(level)


def _local_cluster() -> str | None:
    """The Ray address of a `tunelab cluster up` still running from this data directory
    (its token put in this process's environment), else None."""
    import os

    from tunelab.platform import cluster

    state = cluster.load_state()
    if state is None or not cluster.head_alive(state):
        return None
    os.environ.update({k: v for k, v in state.env().items() if k.startswith("RAY_AUTH")})
    log.info("using the cluster `tunelab cluster up` runs: %s", state.ray_address)
    return state.ray_address


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
        placements = self._placements()
        self.n_workers = len(placements)
        if not placements:
            raise JobError("the Ray cluster has no node with a CPU for evaluations")
        for options in placements:
            self._start(options)

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
            placements.append(
                {
                    "num_cpus": 1,
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                    **_threads(self.threads or cpus),
                }
            )
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
        """Move workers that finished starting to the idle set; drop those of dead nodes."""
        if not self.starting:
            return
        ready, _ = self.ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
        for ref in ready:
            worker, _ = self.starting.pop(ref)
            try:
                self.ray.get(ref)  # raises if the worker died while starting
                self.idle.append(worker)
            except Exception as exc:  # died while starting
                log.warning("evaluation worker failed to start: %s", exc)
                self.replace(worker)
        now = time.monotonic()
        for ref, (worker, t0) in list(self.starting.items()):
            if self._node_dead(worker.options):
                del self.starting[ref]
                self._kill(worker)
                self._drop(worker)
            elif now - t0 > WORKER_START_TIMEOUT_S:
                raise JobError(
                    f"an evaluation worker ({worker.options}) did not start within "
                    f"{WORKER_START_TIMEOUT_S:.0f} s: does the cluster have room for it?"
                )

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
        """Block until at least one evaluation worker is idle."""
        while not self.idle:
            self.poll_starting()
            time.sleep(POLL_S)

    def shutdown(self) -> None:
        for worker in list(self.idle):
            self._kill(worker)
        for worker, _ in self.starting.values():
            self._kill(worker)
        self.idle.clear()
        self.starting.clear()
