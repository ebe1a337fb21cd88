"""The substitution rules of graph rewriting (TASO / X-RLflow style) and the search for
every place they apply.

`RULES` maps each rule's name to the rule; `find_candidates(graph)` applies every rule at
every location and returns the distinct, acyclic results in a fixed order. Each rule is
verified numerically on small examples (`numeric.check_rule`) and, when algebraic, proved
by z3 from the operators' axioms (`verify.prove`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence

from tunelab.workers.graph_rewrite.rules import conv, elementwise, layout, linear
from tunelab.workers.graph_rewrite.rules.core import (
    Builder,
    Candidate,
    Edit,
    Example,
    Index,
    Match,
    Rule,
    check_kind,
)
from tunelab.workers.graphs.ir import Graph, GraphError, Node

__all__ = [
    "RULES",
    "Builder",
    "Candidate",
    "Edit",
    "Example",
    "Index",
    "Match",
    "Rule",
    "find_candidates",
    "get_rules",
]


def _registry() -> dict[str, Rule]:
    out: dict[str, Rule] = {}
    for rule in [*linear.RULES, *layout.RULES, *elementwise.RULES, *conv.RULES]:
        if rule.name in out:
            raise GraphError(f"rule name {rule.name!r} used twice")
        check_kind(rule)
        out[rule.name] = rule
    return out


RULES: dict[str, Rule] = _registry()
_ORDER = {name: i for i, name in enumerate(RULES)}


def get_rules(names: Sequence[str] | None = None) -> list[Rule]:
    """The rules named (all of them, in registry order, for None); ValueError for an
    unknown name."""
    if names is None:
        return list(RULES.values())
    out = []
    for n in names:
        if n not in RULES:
            raise ValueError(f"unknown rule {n!r} (known: {', '.join(RULES)})")
        out.append(RULES[n])
    return out


def find_candidates(
    graph: Graph, rules: Sequence[Rule | str] | None = None, limit: int | None = None
) -> list[Candidate]:
    """Every rule applied at every location of `graph`: the distinct results (by
    `Graph.structure_hash`, the input's own excluded), acyclic and valid, ordered by rule
    (registry order) then location (graph order). Past `limit`, candidates are taken
    round-robin over the rules (each rule's first location, then each rule's second, ...)
    and kept in that same order."""
    chosen = get_rules(None) if rules is None else [
        r if isinstance(r, Rule) else get_rules([r])[0] for r in rules
    ]  # fmt: skip
    chosen = sorted(chosen, key=lambda r: _ORDER.get(r.name, len(_ORDER)))
    idx = Index(graph)
    attrs: dict[int, tuple] = {}
    base = value_hashes(graph, attrs)
    seen = {_top_hash(graph, base)}
    per_rule: list[list[Candidate]] = []
    for rule in chosen:
        found = []
        for m in rule.match(graph, idx):
            try:
                new = rule.apply(graph, m)
            except GraphError:  # a cycle (or a result that does not type-check)
                continue
            h = structure_hash_from(new, graph, base, attrs)
            if h in seen:
                continue
            seen.add(h)
            found.append(Candidate(rule.name, m.location, new))
        per_rule.append(found)
    flat = [c for found in per_rule for c in found]
    if limit is None or len(flat) <= limit:
        return flat
    keep: set[tuple[int, int]] = set()
    depth = 0
    while len(keep) < limit:
        for i, found in enumerate(per_rule):
            if depth < len(found) and len(keep) < limit:
                keep.add((i, depth))
        depth += 1
    return [c for i, found in enumerate(per_rule) for j, c in enumerate(found) if (i, j) in keep]


# -- structure hashes, computed incrementally ------------------------------------------------
# The same hash as `Graph.structure_hash` (tests check it), reusing the input graph's
# per-value hashes for the values a rewrite left alone: a candidate rehashes only the
# nodes downstream of its rewrite.


def _node_hash(n: Node, i: int, hashes: dict[str, str], attrs: dict[int, tuple]) -> str:
    # json.dumps([op, attrs, input hashes, i], sort_keys=True) as Graph.structure_hash
    # writes it, with each node's attrs serialized once
    cached = attrs.get(id(n))
    if cached is None or cached[0] is not n:
        cached = (n, json.dumps(n.op), json.dumps(n.attrs, sort_keys=True))
        attrs[id(n)] = cached
    ins = ", ".join(f'"{h}"' if (h := hashes.get(v)) else _leaf(v) for v in n.inputs)
    body = f"[{cached[1]}, {cached[2]}, [{ins}], {i}]"
    return hashlib.sha1(body.encode()).hexdigest()


@functools.lru_cache(maxsize=65536)
def _leaf(value: str) -> str:
    return json.dumps(f"in:{value}")


def value_hashes(graph: Graph, attrs: dict[int, tuple] | None = None) -> dict[str, str]:
    """The structure hash of every node-produced value of `graph`."""
    hashes: dict[str, str] = {}
    attrs = {} if attrs is None else attrs
    for n in graph.nodes:
        for i, v in enumerate(n.outputs):
            hashes[v] = _node_hash(n, i, hashes, attrs)
    return hashes


def _top_hash(graph: Graph, hashes: dict[str, str]) -> str:
    top = [hashes.get(v) or f"in:{v}" for v in graph.outputs]
    return hashlib.sha256(json.dumps(top).encode()).hexdigest()


def structure_hash_from(
    new: Graph, old: Graph, old_hashes: dict[str, str], attrs: dict[int, tuple] | None = None
) -> str:
    """`new.structure_hash()` for a rewrite `new` of `old` (whose `value_hashes` are
    given): nodes kept unchanged from `old` with unchanged inputs keep their hashes."""
    attrs = {} if attrs is None else attrs
    before = {n.name: n for n in old.nodes}
    hashes: dict[str, str] = {}
    dirty: set[str] = set()
    for n in new.nodes:
        o = before.get(n.name)
        clean = o is not None and (o is n or (
            o.op == n.op and o.inputs == n.inputs and o.outputs == n.outputs
            and o.attrs == n.attrs)) and dirty.isdisjoint(n.inputs)  # fmt: skip
        for i, v in enumerate(n.outputs):
            if clean:
                hashes[v] = old_hashes[v]
            else:
                hashes[v] = _node_hash(n, i, hashes, attrs)
                dirty.add(v)
    return _top_hash(new, hashes)
