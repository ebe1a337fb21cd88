"""The operator-graph IR: values with static types, nodes in topological order.

A `Graph` has inputs (fed at run time), constants (a model's weights, referred to by
name; their values live beside the graph, never in it), nodes and outputs. Every value
name is defined once: by an input, a constant or exactly one node output. Nodes are kept
in a valid topological order. The whole structure is JSON (`to_json`/`from_json`), so a
graph is stored as an artifact and compared by its canonical text.

Plain Python: nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1


class GraphError(ValueError):
    """A graph that breaks the IR's rules (undefined value, cycle, bad type)."""


@dataclass(frozen=True)
class TensorType:
    """A tensor's static shape and dtype (a torch dtype name without `torch.`)."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorType:
        return cls(tuple(int(d) for d in data["shape"]), str(data["dtype"]))

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Node:
    """One operator application: `outputs = op(*inputs, **attrs)`."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        return cls(
            data["name"],
            data["op"],
            list(data["inputs"]),
            list(data["outputs"]),
            dict(data.get("attrs", {})),
        )


@dataclass
class Graph:
    """A dataflow graph: `types` holds the type of every value."""

    inputs: list[str]
    constants: list[str]
    nodes: list[Node]
    outputs: list[str]
    types: dict[str, TensorType]
    name: str = ""

    # -- structure ---------------------------------------------------------------------

    def producers(self) -> dict[str, Node]:
        """The node defining each node-produced value."""
        return {out: n for n in self.nodes for out in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """The nodes reading each value (a node reading a value twice is listed once)."""
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in dict.fromkeys(n.inputs):
                uses.setdefault(v, []).append(n)
        return uses

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def constant_nodes(self) -> set[str]:
        """Names of the nodes computed from constants only (weight preparation)."""
        const = set(self.constants)
        out = set()
        for n in self.nodes:
            if n.inputs and all(v in const for v in n.inputs):
                const.update(n.outputs)
                out.add(n.name)
        return out

    def fresh(self, prefix: str) -> str:
        """A value or node name not used in this graph."""
        used = set(self.types) | {n.name for n in self.nodes}
        i = len(used)
        while f"{prefix}_{i}" in used:
            i += 1
        return f"{prefix}_{i}"

    def validate(self) -> None:
        """Raise GraphError unless every value is defined once before use and typed."""
        defined: set[str] = set()
        for v in [*self.inputs, *self.constants]:
            if v in defined:
                raise GraphError(f"value {v!r} defined twice")
            defined.add(v)
        names: set[str] = set()
        for n in self.nodes:
            if n.name in names:
                raise GraphError(f"node name {n.name!r} used twice")
            names.add(n.name)
            for v in n.inputs:
                if v not in defined:
                    raise GraphError(f"node {n.name} ({n.op}) reads {v!r} before it is defined")
            for v in n.outputs:
                if v in defined:
                    raise GraphError(f"value {v!r} defined twice (by node {n.name})")
                defined.add(v)
        for v in self.outputs:
            if v not in defined:
                raise GraphError(f"graph output {v!r} is not defined")
        missing = defined - set(self.types)
        if missing:
            raise GraphError(f"values without a type: {sorted(missing)[:5]}")

    def toposort(self) -> None:
        """Put the nodes in a topological order (stable: the current order where it is
        valid). GraphError on a cycle."""
        ready = set(self.inputs) | set(self.constants)
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            rest = []
            for n in pending:
                if all(v in ready for v in n.inputs):
                    ordered.append(n)
                    ready.update(n.outputs)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                raise GraphError(f"cycle through nodes {[n.name for n in rest][:5]}")
            pending = rest
        self.nodes = ordered

    def prune(self) -> None:
        """Drop nodes whose outputs nothing reads (dead code after a rewrite)."""
        live = set(self.outputs)
        kept = []
        for n in reversed(self.nodes):
            if any(v in live for v in n.outputs):
                kept.append(n)
                live.update(n.inputs)
        self.nodes = kept[::-1]
        used = live | set(self.inputs)
        self.constants = [c for c in self.constants if c in used]
        self.types = {v: t for v, t in self.types.items() if v in used or v in self._outputs()}

    def _outputs(self) -> set[str]:
        return {v for n in self.nodes for v in n.outputs}

    def copy(self) -> Graph:
        return Graph(
            list(self.inputs),
            list(self.constants),
            [
                Node(n.name, n.op, list(n.inputs), list(n.outputs), dict(n.attrs))
                for n in self.nodes
            ],
            list(self.outputs),
            dict(self.types),
            self.name,
        )

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return dict(sorted(counts.items()))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    # -- serialisation -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "inputs": list(self.inputs),
            "constants": list(self.constants),
            "nodes": [n.to_json() for n in self.nodes],
            "outputs": list(self.outputs),
            "types": {v: t.to_json() for v, t in sorted(self.types.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Graph:
        if data.get("format") != FORMAT:
            raise GraphError(f"graph format {data.get('format')!r}, expected {FORMAT}")
        g = cls(
            list(data["inputs"]),
            list(data["constants"]),
            [Node.from_json(n) for n in data["nodes"]],
            list(data["outputs"]),
            {v: TensorType.from_json(t) for v, t in data["types"].items()},
            data.get("name", ""),
        )
        g.validate()
        return g

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> Graph:
        return cls.from_json(json.loads(text))

    def structure_hash(self) -> str:
        """A hash of the computation, independent of value and node names: two graphs
        computing the same ops over the same inputs/constants in any order hash alike."""
        producers = self.producers()
        memo: dict[str, str] = {}

        def h(value: str) -> str:
            if value in memo:
                return memo[value]
            if value not in producers:
                memo[value] = f"in:{value}"
                return memo[value]
            n = producers[value]
            idx = n.outputs.index(value)
            body = json.dumps([n.op, n.attrs, [h(v) for v in n.inputs], idx], sort_keys=True)
            memo[value] = hashlib.sha1(body.encode()).hexdigest()
            return memo[value]

        import sys

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10 * len(self.nodes) + 1000))
        try:
            top = [h(v) for v in self.outputs]
        finally:
            sys.setrecursionlimit(limit)
        return hashlib.sha256(json.dumps(top).encode()).hexdigest()
