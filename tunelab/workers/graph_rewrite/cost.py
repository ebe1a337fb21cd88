"""TASO's cost model: a graph costs the sum of its operators' runtimes, each measured
once per (op, attributes, input types, device, environment) and cached.

Nodes computed from constants only (weight preparation a rewrite introduced) are folded
before a graph runs and cost nothing. The cache has two levels: this process, and a
`store` (the platform's kind data, shared by every job and node) when given.

The node is sampled (platform/health.py) before the first timing of a batch (a graph's
new operators, or a second of them) and after its last: a batch measured on a busy node
serves this process only and never reaches the store, so a later quiet run measures it
again. A stored cost keeps how it was measured: its seconds, repeats, when, and the
node's health around it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tunelab.platform import health
from tunelab.workers.graphs.ir import Graph, Node, TensorType

Store = tuple[
    Callable[[dict[str, Any]], "dict[str, Any] | None"],
    Callable[[dict[str, Any], dict[str, Any]], None],
]
HEALTH_TTL_S = 1.0  # a node sample this recent stands for the node before the next timing


def op_signature(node: Node, types: list[TensorType]) -> dict[str, Any]:
    """What an operator's runtime depends on: op, attributes and input types."""
    return {
        "op": node.op,
        "attrs": node.attrs,
        "inputs": [[list(t.shape), t.dtype] for t in types],
        "outputs": len(node.outputs),
    }


class OpCostModel:
    """Per-operator runtimes (seconds), measured on first sight and cached.

    `device` and `environment` (library versions, threads) are part of every key, so
    costs measured elsewhere are never mixed in. `repeats` timed runs after `warmup`;
    the median is kept. `busy_per_core`: the node-health threshold of costs shared through
    the store (None: the node is not watched, every cost is shared)."""

    def __init__(
        self,
        device: str = "cpu",
        environment: dict[str, Any] | None = None,
        store: Store | None = None,
        *,
        warmup: int = 2,
        repeats: int = 7,
        min_time_s: float = 1e-4,
        busy_per_core: float | None = health.DEFAULT_BUSY_PER_CORE,
    ) -> None:
        self.device = device
        self.environment = environment or {}
        self.store = store
        self.warmup, self.repeats, self.min_time_s = warmup, repeats, min_time_s
        self.busy_per_core = busy_per_core
        self.costs: dict[str, float] = {}
        self.measured = 0  # operators timed by this process (cache misses)
        self.unshared = 0  # of them, measured on a busy node: kept from the store
        # Timed, not yet stored: (digest, key, value), and the sample taken before them.
        self._pending: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self._before: dict[str, Any] | None = None
        self._before_at = 0.0

    def _key(self, sig: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        full = {**sig, "device": self.device, "environment": self.environment}
        text = json.dumps(full, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest(), full

    def op_cost(self, node: Node, types: list[TensorType]) -> float:
        """Seconds one run of `node` takes on inputs of `types`."""
        digest = self._cost(node, types)
        self.settle()
        return self.costs[digest]

    def node_costs(self, graph: Graph) -> dict[str, float]:
        """Each node's cost (0 for constant-folded nodes), by node name."""
        folded = graph.constant_nodes()
        digests = {
            n.name: self._cost(n, [graph.types[v] for v in n.inputs])
            for n in graph.nodes
            if n.name not in folded
        }
        self.settle()  # stored now: every cost below is what every job uses
        return {n.name: self.costs[digests[n.name]] if n.name in digests else 0.0
                for n in graph.nodes}  # fmt: skip

    def _cost(self, node: Node, types: list[TensorType]) -> str:
        """Find or time one operator's cost (into `costs`); its digest."""
        digest, full = self._key(op_signature(node, types))
        if digest in self.costs:
            return digest
        stored = self.store[0](full) if self.store is not None else None
        cost = stored.get("seconds") if stored else None
        if cost is None:
            self._open_batch()
            cost = self._time(node, types)
            if self.store is not None:
                at = datetime.now(UTC).isoformat(timespec="seconds")
                value = {"seconds": cost, "repeats": self.repeats, "measured_at": at}
                self._pending.append((digest, full, value))
        self.costs[digest] = float(cost)
        return digest

    def _watching(self) -> bool:
        return self.store is not None and self.busy_per_core is not None

    def _sample(self) -> dict[str, Any]:
        assert self.busy_per_core is not None
        return health.sample(self.busy_per_core, window_s=0.0).as_json()

    def _open_batch(self) -> None:
        """Before a timing: the node's sample, unless one is fresh (a stale one closes the
        batch timed since, its new sample standing for after those and before this)."""
        if not self._watching():
            return
        if self._before is None or time.monotonic() - self._before_at > HEALTH_TTL_S:
            now = self._sample()
            if self._pending:
                self._store(now)
            self._before, self._before_at = now, time.monotonic()

    def settle(self) -> None:
        """Store the costs timed since the last call, unless the node was busy around them
        (then they serve this process only)."""
        if self._pending:
            after = self._sample() if self._watching() else None
            self._store(after)
            if after is not None:
                self._before, self._before_at = after, time.monotonic()

    def _store(self, after: dict[str, Any] | None) -> None:
        assert self.store is not None
        pending, self._pending = self._pending, []
        record = health.merge([self._before, after]) if after is not None else None
        if record is not None and record["busy"]:
            self.unshared += len(pending)
            return
        for digest, full, value in pending:
            self.store[1](full, {**value, "health": record} if record else value)
            stored = self.store[0](full)  # first writer wins: use what every job uses
            if stored and stored.get("seconds") is not None:
                self.costs[digest] = float(stored["seconds"])

    def graph_cost(self, graph: Graph) -> float:
        """TASO's cost of a graph: the sum of its operators' runtimes."""
        return sum(self.node_costs(graph).values())

    def _time(self, node: Node, types: list[TensorType]) -> float:
        import torch

        from tunelab.workers.graphs.ops import run_node

        gen = torch.Generator().manual_seed(0)
        args = []
        for t in types:
            dtype = getattr(torch, t.dtype)
            if dtype.is_floating_point:
                args.append(torch.randn(t.shape, generator=gen, dtype=dtype))
            else:  # indices (embedding lookups): small, in range of any table
                args.append(torch.zeros(t.shape, dtype=dtype))
        args = [a.to(self.device) for a in args]
        sync = torch.cuda.synchronize if self.device.startswith("cuda") else (lambda: None)
        with torch.no_grad():
            for _ in range(self.warmup):
                run_node(node, args)
            sync()
            # inner loop long enough for the clock: small ops repeat within one sample
            t0 = time.perf_counter()
            run_node(node, args)
            sync()
            once = max(time.perf_counter() - t0, 1e-7)
            inner = max(1, min(1000, int(self.min_time_s / once)))
            samples = []
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                for _ in range(inner):
                    run_node(node, args)
                sync()
                samples.append((time.perf_counter() - t0) / inner)
        self.measured += 1
        return statistics.median(samples)
