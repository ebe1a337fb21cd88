"""TASO's cost model: a graph costs the sum of its operators' runtimes, each measured
once per (op, attributes, input types, device, environment) and cached.

Nodes computed from constants only (weight preparation a rewrite introduced) are folded
before a graph runs and cost nothing. The cache has two levels: this process, and a
`store` (the platform's kind data, shared by every job and node) when given.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from tunelab.workers.graphs.ir import Graph, Node, TensorType

Store = tuple[
    Callable[[dict[str, Any]], "dict[str, Any] | None"],
    Callable[[dict[str, Any], dict[str, Any]], None],
]


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
    the median is kept."""

    def __init__(
        self,
        device: str = "cpu",
        environment: dict[str, Any] | None = None,
        store: Store | None = None,
        *,
        warmup: int = 2,
        repeats: int = 7,
        min_time_s: float = 1e-4,
    ) -> None:
        self.device = device
        self.environment = environment or {}
        self.store = store
        self.warmup, self.repeats, self.min_time_s = warmup, repeats, min_time_s
        self.costs: dict[str, float] = {}
        self.measured = 0  # operators timed by this process (cache misses)

    def _key(self, sig: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        full = {**sig, "device": self.device, "environment": self.environment}
        text = json.dumps(full, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest(), full

    def op_cost(self, node: Node, types: list[TensorType]) -> float:
        """Seconds one run of `node` takes on inputs of `types`."""
        digest, full = self._key(op_signature(node, types))
        if digest in self.costs:
            return self.costs[digest]
        cost = None
        if self.store is not None:
            stored = self.store[0](full)
            cost = stored.get("seconds") if stored else None
        if cost is None:
            cost = self._time(node, types)
            if self.store is not None:
                self.store[1](full, {"seconds": cost})
                stored = self.store[0](full)  # first writer wins: use what every job uses
                cost = stored["seconds"] if stored else cost
        self.costs[digest] = float(cost)
        return self.costs[digest]

    def node_costs(self, graph: Graph) -> dict[str, float]:
        """Each node's cost (0 for constant-folded nodes), by node name."""
        folded = graph.constant_nodes()
        return {
            n.name: 0.0 if n.name in folded else self.op_cost(n, [graph.types[v] for v in n.inputs])
            for n in graph.nodes
        }

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
