"""The rule engine: an index of a graph for matching, the `Rule` abstraction, edits that
build a new graph, and a builder of small example graphs for the rules' tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from tunelab.workers.graphs.ir import Graph, GraphError, Node, TensorType
from tunelab.workers.graphs.ops import infer_types

if TYPE_CHECKING:
    import torch

    from tunelab.workers.graph_rewrite.rules.terms import Term

KINDS = ("algebraic", "numeric-only")
SCALAR_OPS = ("mul_scalar", "div_scalar")
LAYOUT_OPS = ("transpose", "permute", "reshape")


@dataclass(frozen=True)
class Match:
    """Where a rule applies: the matched node names (`location`) and what `apply` needs."""

    rule: str
    location: tuple[str, ...]
    bindings: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __getitem__(self, key: str) -> Any:
        return self.bindings[key]


class Candidate(NamedTuple):
    """One rewrite of a graph: the rule, where it applied and the graph it gives."""

    rule: str
    location: tuple[str, ...]
    graph: Graph


class Example(NamedTuple):
    """A small graph a rule fires on, and the values of its constants."""

    graph: Graph
    constants: dict[str, torch.Tensor]


class Index:
    """Producers, consumers and nodes by operator of one graph, built once and shared by
    every rule's matcher."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.types = graph.types
        self.pos: dict[str, int] = {}
        self.producer: dict[str, Node] = {}
        self.users: dict[str, list[Node]] = {}
        self.by_op: dict[str, list[Node]] = {}
        const = set(graph.constants)
        for i, n in enumerate(graph.nodes):
            self.pos[n.name] = i
            self.by_op.setdefault(n.op, []).append(n)
            for v in dict.fromkeys(n.inputs):
                self.users.setdefault(v, []).append(n)
            for v in n.outputs:
                self.producer[v] = n
            if n.inputs and all(v in const for v in n.inputs):
                const.update(n.outputs)
        self.const = const
        self.outputs = set(graph.outputs)

    def shape(self, value: str) -> tuple[int, ...]:
        return self.types[value].shape

    def rank(self, value: str) -> int:
        return len(self.types[value].shape)

    def made_by(self, value: str, *ops: str) -> Node | None:
        """The node producing `value` if its op is one of `ops` (any op if none given)."""
        n = self.producer.get(value)
        if n is None or (ops and n.op not in ops):
            return None
        return n

    def sole_user(self, value: str, node: Node) -> bool:
        """True if `node` is the only reader of `value` and it is not a graph output
        (so the producer dies when `node` is rewritten)."""
        return value not in self.outputs and [u.name for u in self.users.get(value, ())] == [
            node.name
        ]

    def is_const(self, value: str) -> bool:
        return value in self.const

    def key(self, names: Iterable[str]) -> tuple[int, ...]:
        """A sort key of a location: its nodes' positions."""
        return tuple(self.pos[n] for n in names)


_TYPES: dict[tuple, list[TensorType]] = {}


def _infer(node: Node, types: list[TensorType]) -> list[TensorType]:
    """`ops.infer_types`, memoized: rewrites build the same few signatures over and over
    (tracing an op on the meta device costs about a millisecond)."""
    key = (node.op, json.dumps(node.attrs, sort_keys=True), len(node.outputs), tuple(types))
    found = _TYPES.get(key)
    if found is None:
        found = infer_types(node, types)
        if len(_TYPES) > 100_000:
            _TYPES.clear()
        _TYPES[key] = found
    return list(found)


class Edit:
    """A rewrite in progress on a copy of a graph: new nodes (typed as they are added)
    and values whose readers are redirected; `finish` orders, prunes and validates.

    The copy shares the input's unchanged `Node` objects (a node whose inputs are
    redirected is replaced by a new one): nodes are values, never edited in place, which
    keeps a rewrite of a large graph cheap."""

    def __init__(self, graph: Graph) -> None:
        self.graph = Graph(list(graph.inputs), list(graph.constants), list(graph.nodes),
                           list(graph.outputs), dict(graph.types), graph.name)  # fmt: skip
        self._new: list[Node] = []
        self._renames: dict[str, str] = {}
        self._used: set[str] | None = None

    def fresh(self, prefix: str) -> str:
        """A name unused in the graph (as `Graph.fresh`, without rescanning the graph)."""
        if self._used is None:
            g = self.graph
            self._used = set(g.types) | {n.name for n in g.nodes}
        i = len(self._used)
        while f"{prefix}_{i}" in self._used:
            i += 1
        name = f"{prefix}_{i}"
        self._used.add(name)
        return name

    def node(
        self, op: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None, outputs: int = 1
    ) -> list[str]:
        """Add `op(*inputs, **attrs)`; its output value names."""
        g = self.graph
        node = Node(self.fresh(op), op, list(inputs), [], dict(attrs or {}))
        g.nodes.append(node)
        for _ in range(outputs):
            v = node.name if not node.outputs and outputs == 1 else self.fresh(node.name)
            node.outputs.append(v)
            g.types[v] = TensorType(())  # placeholder until inferred
        types = _infer(node, [g.types[v] for v in node.inputs])
        for v, t in zip(node.outputs, types, strict=True):
            g.types[v] = t
        self._new.append(node)
        return list(node.outputs)

    def op(self, op: str, *inputs: str, **attrs: Any) -> str:
        """Add a single-output node; its output value."""
        return self.node(op, inputs, attrs)[0]

    def replace(self, old: str, new: str) -> None:
        """Make every reader of `old` outside the new nodes (and the graph outputs) read
        `new` instead."""
        self._renames[old] = new

    def finish(self) -> Graph:
        """The new graph: new nodes placed after their inputs, readers redirected, dead
        nodes pruned; GraphError if the result has a cycle or is invalid."""
        g = self.graph
        new_ids = {id(n) for n in self._new}
        old = [n for n in g.nodes if id(n) not in new_ids]
        if self._renames:
            r = self._renames
            for k, n in enumerate(old):
                if not r.keys().isdisjoint(n.inputs):
                    ins = [r.get(v, v) for v in n.inputs]
                    old[k] = Node(n.name, n.op, ins, list(n.outputs), dict(n.attrs))
            g.outputs = [r.get(v, v) for v in g.outputs]
        where = {v: i for i, n in enumerate(old) for v in n.outputs}
        at = 1 + max((where[v] for n in self._new for v in n.inputs if v in where), default=-1)
        g.nodes = old[:at] + self._new + old[at:]
        ready = set(g.inputs) | set(g.constants)
        for n in g.nodes:
            if not ready.issuperset(n.inputs):
                g.toposort()  # GraphError on a cycle
                break
            ready.update(n.outputs)
        _prune(g)
        g.validate()
        return g


def _prune(g: Graph) -> None:
    """`Graph.prune` in one pass: drop the nodes nothing reads, then unused constants and
    the types of values no longer defined."""
    live = set(g.outputs)
    kept = []
    for n in reversed(g.nodes):
        if not live.isdisjoint(n.outputs):
            kept.append(n)
            live.update(n.inputs)
    kept.reverse()
    g.nodes = kept
    g.constants = [c for c in g.constants if c in live]
    keep = live | set(g.inputs) | {v for n in kept for v in n.outputs}
    g.types = {v: t for v, t in g.types.items() if v in keep}


class Builder:
    """Builds a small example graph with random constants (for the rules' tests)."""

    def __init__(self, seed: int = 0) -> None:
        import torch

        self._torch = torch
        self.gen = torch.Generator().manual_seed(seed)
        self.graph = Graph([], [], [], [], {}, "example")
        self.constants: dict[str, torch.Tensor] = {}
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def input(self, *shape: int) -> str:
        v = self._name("x")
        self.graph.inputs.append(v)
        self.graph.types[v] = TensorType(tuple(shape))
        return v

    def const(self, *shape: int, positive: bool = False) -> str:
        """A constant of random values (uniform in [0.5, 1.5] if `positive`)."""
        torch = self._torch
        v = self._name("w")
        if positive:
            value = torch.rand(shape, generator=self.gen) + 0.5
        else:
            value = torch.randn(shape, generator=self.gen)
        self.graph.constants.append(v)
        self.graph.types[v] = TensorType(tuple(shape))
        self.constants[v] = value
        return v

    def nodes(self, op: str, *inputs: str, outputs: int = 1, **attrs: Any) -> list[str]:
        g = self.graph
        name = self._name("n")
        outs = [name] if outputs == 1 else [f"{name}_{k}" for k in range(outputs)]
        node = Node(name, op, list(inputs), outs, dict(attrs))
        types = infer_types(node, [g.types[v] for v in inputs])
        g.nodes.append(node)
        g.types.update(zip(outs, types, strict=True))
        return outs

    def op(self, op: str, *inputs: str, **attrs: Any) -> str:
        return self.nodes(op, *inputs, **attrs)[0]

    def build(self, *outputs: str) -> Example:
        self.graph.outputs = list(outputs)
        self.graph.validate()
        return Example(self.graph, self.constants)


class Rule:
    """A verified substitution: `match` finds where it applies, `apply` rewrites one match
    into a new graph. `kind` is "algebraic" (its `terms` are proved by z3 under the
    operators' axioms) or "numeric-only" (`why_numeric_only` says why; checked on
    examples only). Subclasses implement `match_at` (or `match`), `rewrite`, `example`
    and, for algebraic rules, `terms`."""

    name: str = ""
    description: str = ""
    kind: str = "algebraic"
    why_numeric_only: str = ""
    root_ops: tuple[str, ...] = ()
    inverse: str | None = None  # the rule undoing this one, where there is one

    def match(self, graph: Graph, index: Index | None = None) -> list[Match]:
        """Every location where the rule applies, in graph order."""
        idx = index if index is not None else Index(graph)
        found: list[Match] = []
        for op in self.root_ops:
            for node in idx.by_op.get(op, ()):
                found.extend(self.match_at(idx, node))
        found.sort(key=lambda m: idx.key(m.location))
        return found

    def match_at(self, idx: Index, node: Node) -> Iterator[Match]:
        """The matches rooted at `node` (whose op is one of `root_ops`)."""
        raise NotImplementedError

    def apply(self, graph: Graph, match: Match) -> Graph:
        """A new graph with `match` rewritten (the input is not modified); GraphError if
        the result is invalid (e.g. a cycle)."""
        edit = Edit(graph)
        self.rewrite(edit, match)
        return edit.finish()

    def rewrite(self, edit: Edit, match: Match) -> None:
        raise NotImplementedError

    def examples(self) -> list[Example]:
        """Small graphs the rule fires on, in two shape variants (random constants)."""
        out = []
        for variant in (0, 1):
            b = Builder(seed=variant)
            b.graph.name = f"{self.name}-{variant}"
            out.append(self.example(b, variant))
        return out

    def example(self, b: Builder, variant: int) -> Example:
        raise NotImplementedError

    def terms(self) -> list[tuple[Term, Term]]:
        """Source and target terms (one pair per rewritten output) for the z3 proof."""
        return []

    def _m(self, nodes: Iterable[Node], **bindings: Any) -> Match:
        return Match(self.name, tuple(n.name for n in nodes), bindings)

    def __repr__(self) -> str:
        return f"<Rule {self.name}>"


# -- helpers shared by the rule modules -----------------------------------------------------


def norm_dim(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def transpose_perm(node: Node, rank: int) -> list[int]:
    """The permutation a transpose or permute node applies."""
    if node.op == "permute":
        return [norm_dim(d, rank) for d in node.attrs["dims"]]
    i, j = norm_dim(node.attrs["dim0"], rank), norm_dim(node.attrs["dim1"], rank)
    p = list(range(rank))
    p[i], p[j] = p[j], p[i]
    return p


def is_last_two_transpose(node: Node, rank: int) -> bool:
    """True for a transpose of the last two dims (what matmul transposes)."""
    if node.op != "transpose" or rank < 2:
        return False
    dims = {norm_dim(node.attrs["dim0"], rank), norm_dim(node.attrs["dim1"], rank)}
    return dims == {rank - 2, rank - 1}


def last_two(rank: int) -> dict[str, int]:
    return {"dim0": rank - 2, "dim1": rank - 1}


def conv_config(node: Node) -> tuple:
    """A conv2d node's stride, padding, dilation and groups, normalized."""
    a = node.attrs
    return (
        tuple(a["stride"]),
        tuple(a["padding"]),
        tuple(a.get("dilation", (1, 1))),
        a.get("groups", 1),
    )


def other(node: Node, value: str) -> str | None:
    """The other input of a binary node reading `value` (None if it reads it twice)."""
    a, b = node.inputs[:2]
    if a == value and b != value:
        return b
    if b == value and a != value:
        return a
    return None


def check_kind(rule: Rule) -> None:
    if rule.kind not in KINDS:
        raise GraphError(f"rule {rule.name}: kind {rule.kind!r} not in {KINDS}")
