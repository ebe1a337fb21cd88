"""The graph-rewrite rule library: every rule checked numerically on its examples (two
shape variants each), every algebraic rule proved by z3 from the operator axioms, wrong
rules caught by both checks, and find_candidates' dedupe, order and limit. The suite
models (size "test") show where each rule fires."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import pytest
import torch

from tunelab.workers.graph_rewrite.rules import (
    RULES,
    Builder,
    Edit,
    Index,
    Match,
    Rule,
    find_candidates,
    get_rules,
    structure_hash_from,
    value_hashes,
)
from tunelab.workers.graph_rewrite.rules import terms as t
from tunelab.workers.graph_rewrite.rules.linear import MergeSiblings
from tunelab.workers.graph_rewrite.rules.numeric import check_rule
from tunelab.workers.graphs.ir import Graph, Node

torch.set_num_threads(1)

SUITE = ("bert", "vit", "resnext50", "transducer")
ALL = list(RULES.values())


# -- the library ----------------------------------------------------------------------------


def test_at_least_40_rules_with_kebab_case_names_and_kinds() -> None:
    assert len(RULES) >= 40
    for name, rule in RULES.items():
        assert rule.name == name
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name
        assert rule.description
        assert rule.kind in ("algebraic", "numeric-only")
        if rule.kind == "numeric-only":
            assert rule.why_numeric_only, name
        else:
            assert rule.terms(), name
        if rule.inverse is not None:
            assert rule.inverse in RULES, (name, rule.inverse)


def test_get_rules() -> None:
    assert [r.name for r in get_rules(None)] == list(RULES)
    assert [r.name for r in get_rules(["fold-conv-bn", "merge-linear-2"])] == [
        "fold-conv-bn",
        "merge-linear-2",
    ]
    with pytest.raises(ValueError, match=r"unknown rule 'no-such-rule' \(known: merge-linear-2, "):
        get_rules(["merge-linear-2", "no-such-rule"])


# -- numeric verification ---------------------------------------------------------------------


@pytest.mark.parametrize("rule", ALL, ids=lambda r: r.name)
def test_rule_is_numerically_equivalent_on_two_shape_variants(rule: Rule) -> None:
    examples = rule.examples()
    shapes = {tuple(ex.graph.types[v].shape for v in ex.graph.inputs) for ex in examples}
    assert len(examples) >= 2 and len(shapes) >= 2, "needs two shape variants"
    assert check_rule(rule, examples) == []


# Pairs whose round trip gives back the very same graph (the others give an equivalent
# one, e.g. with the weights split and concatenated again).
EXACT_ROUND_TRIPS = {
    "scalar-into-matmul-lhs", "layernorm-decompose-affine", "maxpool-relu-swap",
    "relu-maxpool-swap", "conv-relu-fuse", "conv-relu-unfuse", "scalar-through-layout",
    "layout-through-scalar", "layernorm-fuse-affine", "scalar-out-of-matmul",
    "scalar-into-matmul-rhs", "linear-distribute-add", "linear-factor-add",
}  # fmt: skip


@pytest.mark.parametrize("rule", [r for r in ALL if r.inverse], ids=lambda r: r.name)
def test_rule_then_its_inverse(rule: Rule) -> None:
    """Both directions: the inverse fires on a rewritten example and brings back an
    equivalent (for some pairs the identical) graph."""
    from tunelab.workers.graphs.execute import compare, random_inputs, run

    inverse = RULES[rule.inverse]  # type: ignore[index]
    fired = exact = False
    for ex in rule.examples():
        g = ex.graph
        for m in rule.match(g):
            forward = rule.apply(g, m)
            for mb in inverse.match(forward):
                fired = True
                back = inverse.apply(forward, mb)
                exact |= back.structure_hash() == g.structure_hash()
                inputs = random_inputs(g, 3)
                assert compare(run(back, ex.constants, inputs), run(g, ex.constants, inputs),
                               rtol=1e-4, atol=1e-4) is None  # fmt: skip
    assert fired, f"{inverse.name} never fires after {rule.name}"
    assert exact == (rule.name in EXACT_ROUND_TRIPS)


def test_multi_consumer_values_are_kept_or_not_matched() -> None:
    b = Builder()
    x = b.input(1, 4, 6, 6)
    c = b.op("conv2d", x, b.const(4, 4, 3, 3), stride=[1, 1], padding=[1, 1], dilation=[1, 1],
             groups=1)  # fmt: skip
    bn = b.op("batch_norm", c, *(b.const(4) for _ in range(3)), b.const(4, positive=True),
              eps=1e-5)  # fmt: skip
    ex = b.build(bn, c)  # the conv's output is also a graph output
    assert RULES["fold-conv-bn"].match(ex.graph) == []
    assert RULES["batch-norm-to-affine"].match(ex.graph)  # its own input is not removed

    b = Builder()
    a, m = b.input(3, 4), b.input(4, 5)
    mm = b.op("matmul", a, m)
    ex = b.build(b.op("mul_scalar", mm, value=2.0), b.op("relu", mm))
    assert RULES["scalar-into-matmul-lhs"].match(ex.graph) == []
    # merge-linear-2 keeps other readers of a merged output working (its example has one)
    assert check_rule(RULES["merge-linear-2"]) == []


# -- symbolic verification --------------------------------------------------------------------


@pytest.mark.parametrize("rule", [r for r in ALL if r.kind == "algebraic"], ids=lambda r: r.name)
def test_algebraic_rule_is_proved_by_z3(rule: Rule) -> None:
    from tunelab.workers.graph_rewrite.rules.verify import prove

    proof = prove(rule, timeout_ms=10_000)
    assert proof.proved, proof.detail


def test_verify_all_table() -> None:
    from tunelab.workers.graph_rewrite.rules.verify import format_table, verify_all

    rows = verify_all(numeric=False, timeout_ms=10_000)
    assert [r["rule"] for r in rows] == list(RULES)
    for r in rows:
        expected = "yes" if r["kind"] == "algebraic" else "numeric-only"
        assert r["proved"] == expected, r
    numeric_only = {r["rule"] for r in rows if r["proved"] == "numeric-only"}
    assert numeric_only == {"layout-compose", "reshape-reshape", "layout-identity",
                            "fold-layernorm-into-linears", "fold-conv-bn",
                            "batch-norm-to-affine", "group-conv-to-dense",
                            "avgpool-to-mean"}  # fmt: skip
    table = format_table(rows)
    assert table.splitlines()[0].split() == ["rule", "kind", "proved", "reason"]
    print("\n" + table)


# -- wrong rules are caught -------------------------------------------------------------------


class WrongMatmulCommute(Rule):
    name = "wrong-matmul-commute"
    description = "matmul(a, b) -> matmul(b, a) (wrong)"
    root_ops = ("matmul",)

    def match_at(self, idx: Index, node: Node) -> Iterator[Match]:
        a, c = node.inputs
        if idx.shape(a) == idx.shape(c) and idx.shape(a)[-1] == idx.shape(a)[-2]:
            yield self._m([node], a=a, b=c, out=node.outputs[0])

    def rewrite(self, e: Edit, m: Match) -> None:
        e.replace(m["out"], e.op("matmul", m["b"], m["a"]))

    def example(self, b: Builder, variant: int):  # type: ignore[no-untyped-def]
        a, c = (b.input(4, 4), b.input(4, 4)) if variant == 0 else (b.input(2, 3, 3),) * 2
        return b.build(b.op("matmul", a, c))

    def terms(self):  # type: ignore[no-untyped-def]
        a, c = t.var("a"), t.var("b")
        return [(t.matmul(a, c), t.matmul(c, a))]


class WrongTransposeCancel(Rule):
    name = "wrong-transpose-cancel"
    description = "transpose(transpose(x, i, j), j, k) -> x: cancels over the wrong axes"
    root_ops = ("transpose",)

    def match_at(self, idx, node):  # type: ignore[no-untyped-def]
        inner = idx.made_by(node.inputs[0], "transpose")
        if inner is not None and len(set(idx.shape(inner.inputs[0]))) == 1:
            yield self._m([inner, node], x=inner.inputs[0], out=node.outputs[0])

    def rewrite(self, e, m):  # type: ignore[no-untyped-def]
        e.replace(m["out"], m["x"])

    def example(self, b, variant):  # type: ignore[no-untyped-def]
        x = b.input(3, 3, 3) if variant == 0 else b.input(2, 2, 2, 2)
        return b.build(b.op("transpose", b.op("transpose", x, dim0=0, dim1=1), dim0=1, dim1=2))

    def terms(self):  # type: ignore[no-untyped-def]
        x = t.var("x")
        return [(t.tr(1, 2, t.tr(0, 1, x)), x)]


class WrongMergeLinearAxis(MergeSiblings):
    """Merges two linears but takes the parts of the merged output along the wrong axis
    (interleaved: the output viewed as [.., out, 2] and split on the last dim)."""

    def __init__(self) -> None:
        super().__init__("linear", 2)
        self.name = "wrong-merge-linear-axis"

    def match(self, graph, index=None):  # type: ignore[no-untyped-def]
        return [m for m in super().match(graph, index)
                if len({graph.types[i[1]].shape for i in m["ins"]}) == 1]  # fmt: skip

    def rewrite(self, e, m):  # type: ignore[no-untyped-def]
        ins = m["ins"]
        w = e.op("concat", *[i[1] for i in ins], dim=0)
        y = e.op("linear", m["x"], w, *([e.op("concat", *[i[2] for i in ins], dim=0)]
                                        if len(ins[0]) > 2 else []))  # fmt: skip
        shape = list(e.graph.types[m["outs"][0]].shape)
        z = e.op("reshape", y, shape=[*shape, 2])
        parts = e.node("split", [z], {"dim": len(shape), "sizes": [1, 1]}, outputs=2)
        for old, part in zip(m["outs"], parts, strict=True):
            e.replace(old, e.op("reshape", part, shape=shape))

    def example(self, b, variant):  # type: ignore[no-untyped-def]
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        d = b.graph.types[x].shape[-1]
        return b.build(b.op("linear", x, b.const(6, d), b.const(6)),
                       b.op("linear", x, b.const(6, d), b.const(6)))  # fmt: skip

    def terms(self):  # type: ignore[no-untyped-def]
        x, w1, w2, b1, b2 = (t.var(n) for n in ("x", "W1", "W2", "b1", "b2"))
        y = t.reshape(t.ivar("p"), t.linear(x, t.concat(-2, w1, w2), t.concat(-1, b1, b2)))
        q = t.ivar("q")
        return [(t.linear(x, w1, b1), t.reshape(q, t.f("split0", -1, y))),
                (t.linear(x, w2, b2), t.reshape(q, t.f("split1", -1, y)))]  # fmt: skip


@pytest.mark.parametrize("wrong", [WrongMatmulCommute(), WrongTransposeCancel(),
                                   WrongMergeLinearAxis()], ids=lambda r: r.name)  # fmt: skip
def test_wrong_rule_is_caught_numerically_and_by_z3(wrong: Rule) -> None:
    from tunelab.workers.graph_rewrite.rules.verify import prove

    problems = check_rule(wrong)
    assert problems and all("differ" in p for p in problems), problems
    proof = prove(wrong, timeout_ms=5_000)
    assert not proof.proved, proof.detail


def test_z3_rejects_the_classic_mistakes() -> None:
    from tunelab.workers.graph_rewrite.rules.verify import prove_equal

    a, b, c = t.var("a"), t.var("b"), t.var("c")
    assert not prove_equal(t.relu(t.add(a, b)), t.add(t.relu(a), t.relu(b)), 5_000)[0]
    assert not prove_equal(t.T(t.matmul(a, b)), t.matmul(t.T(a), t.T(b)), 5_000)[0]
    assert not prove_equal(t.split(-1, t.concat(-2, a, b), 2)[0], a, 5_000)[0]
    assert prove_equal(t.matmul(a, t.add(b, c)), t.add(t.matmul(a, c), t.matmul(a, b)))[0]


# -- find_candidates --------------------------------------------------------------------------


def _attention_graph() -> Graph:
    """A small attention block: q/k/v linears sharing x, scaled scores, softmax."""
    b = Builder(seed=3)
    x = b.input(1, 6, 8)

    def heads(v: str) -> str:
        return b.op("transpose", b.op("reshape", v, shape=[1, 6, 2, 4]), dim0=1, dim1=2)

    q, k, v = (heads(b.op("linear", x, b.const(8, 8), b.const(8))) for _ in range(3))
    s = b.op("mul_scalar", b.op("matmul", q, b.op("transpose", k, dim0=2, dim1=3)), value=0.5)
    y = b.op("matmul", b.op("softmax", s, dim=3), v)
    out = b.op("reshape", b.op("transpose", y, dim0=1, dim1=2), shape=[1, 6, 8])
    return b.build(b.op("linear", out, b.const(8, 8), b.const(8))).graph


def test_find_candidates_distinct_ordered_and_deterministic() -> None:
    g = _attention_graph()
    before = g.dumps()
    cands = find_candidates(g)
    assert g.dumps() == before  # the input graph is never modified
    again = find_candidates(g)
    assert [(c.rule, c.location) for c in cands] == [(c.rule, c.location) for c in again]
    assert [c.graph.dumps() for c in cands] == [c.graph.dumps() for c in again]

    hashes = [c.graph.structure_hash() for c in cands]
    assert len(set(hashes)) == len(hashes)
    assert g.structure_hash() not in hashes
    base = value_hashes(g)
    assert hashes == [structure_hash_from(c.graph, g, base) for c in cands]

    order = list(RULES)
    pos = {n.name: i for i, n in enumerate(g.nodes)}
    keys = [(order.index(c.rule), [pos[n] for n in c.location]) for c in cands]
    assert keys == sorted(keys)
    fired = {c.rule for c in cands}
    assert {"merge-linear-2", "merge-linear-3", "linear-to-matmul", "scalar-into-matmul-lhs",
            "fold-scalar-into-projection", "layout-compose"} <= fired  # fmt: skip
    for c in cands:
        c.graph.validate()


def test_find_candidates_rules_and_limit() -> None:
    g = _attention_graph()
    everything = find_candidates(g)
    only = find_candidates(g, ["merge-linear-2", "linear-to-matmul"])
    assert {c.rule for c in only} == {"merge-linear-2", "linear-to-matmul"}
    assert only == find_candidates(g, get_rules(["linear-to-matmul", "merge-linear-2"]))

    limited = find_candidates(g, limit=7)
    assert len(limited) == 7
    assert limited == find_candidates(g, limit=7)
    # round-robin over the rules: the first 7 rules that fire give one candidate each
    firing = list(dict.fromkeys(c.rule for c in everything))
    assert [c.rule for c in limited] == firing[:7]
    assert all(c in everything for c in limited)
    assert find_candidates(g, limit=10_000) == everything


class CycleMaker(Rule):
    """Merges matmul(x, A) with matmul(x, B) where B is computed from the first one's
    output: the merged node would read its own output."""

    name = "cycle-maker"
    description = "test only"
    root_ops = ("matmul",)

    def match_at(self, idx, node):  # type: ignore[no-untyped-def]
        for other_node in idx.users.get(node.inputs[0], []):
            if other_node is not node and other_node.op == "matmul":
                yield self._m([node, other_node], x=node.inputs[0],
                              ws=[node.inputs[1], other_node.inputs[1]],
                              outs=[node.outputs[0], other_node.outputs[0]])  # fmt: skip

    def rewrite(self, e, m):  # type: ignore[no-untyped-def]
        y = e.op("matmul", m["x"], e.op("concat", *m["ws"], dim=1))
        for old, new in zip(m["outs"], e.node("split", [y], {"dim": 1, "sizes": [4, 4]}, 2),
                            strict=True):  # fmt: skip
            e.replace(old, new)


def test_find_candidates_drops_cyclic_results() -> None:
    b = Builder()
    x = b.input(4, 4)
    y1 = b.op("matmul", x, b.const(4, 4))
    y2 = b.op("matmul", x, b.op("relu", y1))  # B depends on the other matmul
    g = b.build(y2).graph
    rule = CycleMaker()
    assert len(rule.match(g)) == 2
    from tunelab.workers.graphs.ir import GraphError

    with pytest.raises(GraphError, match="cycle"):
        rule.apply(g, rule.match(g)[0])
    assert find_candidates(g, [rule]) == []


# -- the suite models -------------------------------------------------------------------------

# Rules that fire on no suite model's own graph, and rewrites after which they do (for
# inverses: the rule they undo; otherwise the start of a chain). Some of these paths run
# through weight preparation (constant nodes), where a rewrite changes nothing at run time.
WITNESSES: dict[str, tuple[str, list[str]]] = {
    "unmerge-linear": ("bert", ["merge-linear-2"]),
    "merge-matmul-2": ("bert", ["linear-to-matmul", "linear-to-matmul"]),
    "merge-matmul-3": ("bert", ["linear-to-matmul", "linear-to-matmul", "linear-to-matmul"]),
    "matmul-add-to-linear": ("bert", ["linear-to-matmul"]),
    "matmul-to-linear": ("bert", ["linear-to-matmul"]),
    "merge-linear-chain": ("transducer", ["linear-distribute-add"]),
    "fold-scalar-into-linear": ("bert", ["scalar-into-matmul-lhs", "scalar-through-layout",
                                         "scalar-through-layout"]),
    "linear-factor-add": ("transducer", ["linear-distribute-add"]),
    "scalar-out-of-matmul": ("bert", ["scalar-into-matmul-lhs"]),
    "matmul-double-transpose": ("bert", ["matmul-transposed-rhs-swap", "transpose-of-matmul"]),
    "transpose-of-matmul": ("bert", ["matmul-transposed-rhs-swap"]),
    "transpose-cancel": ("bert", ["linear-to-matmul", "matmul-add-to-linear"]),
    "reshape-reshape": ("vit", ["unfold-conv-bias", "fold-conv-add"]),
    "scalar-through-layout": ("bert", ["scalar-into-matmul-lhs"]),
    "layout-through-scalar": ("bert", ["scalar-into-matmul-lhs", "scalar-through-layout"]),
    "concat-of-split": ("vit", ["add-over-concat", "concat-of-adds"]),
    "split-of-concat": ("bert", ["merge-linear-2", "unmerge-linear"]),
    "concat-of-adds": ("vit", ["add-over-concat"]),
    "layernorm-fuse-affine": ("bert", ["layernorm-decompose-affine"]),
    "relu-maxpool-swap": ("resnext50", ["maxpool-relu-swap"]),
    "fold-conv-mul": ("resnext50", ["batch-norm-to-affine"]),
    "fold-conv-add": ("vit", ["unfold-conv-bias"]),
    "conv-relu-fuse": ("resnext50", ["fold-conv-bn"]),
    "conv-relu-unfuse": ("resnext50", ["fold-conv-bn", "conv-relu-fuse"]),
    "unmerge-conv": ("resnext50", ["merge-parallel-convs"]),
    "merge-conv-add": ("resnext50", ["fold-conv-bn", "fold-conv-bn"]),
}  # fmt: skip
# Rules that fire on none of the suite models, even after rewrites (kept: they are part
# of the TASO rule set and fire on other models, see their examples).
NEVER_ON_SUITE = {
    "matmul-factor-add": "no model adds two matmuls sharing an operand",
    "layout-identity": "the importer emits no identity layout ops and layout-compose / "
    "reshape-reshape remove the identities they would make",
}


@functools.cache
def _imported(model: str, size: str):  # type: ignore[no-untyped-def]
    from tunelab.workers.graphs.frontend import import_model

    return import_model(model, size)


def _direct(size: str) -> dict[str, dict[str, int]]:
    """rule -> model -> its matches on the model's imported graph."""
    table: dict[str, dict[str, int]] = {name: {} for name in RULES}
    for model in SUITE:
        g = _imported(model, size).graph
        idx = Index(g)
        for name, rule in RULES.items():
            if n := len(rule.match(g, idx)):
                table[name][model] = n
    return table


def _print_table(direct: dict[str, dict[str, int]], size: str) -> None:
    print(f"\nrule -> suite models it fires on (size {size}; matches per model)")
    for name in RULES:
        on = ", ".join(f"{m} x{n}" for m, n in direct[name].items())
        if not on and name in WITNESSES:
            model, path = WITNESSES[name]
            on = f"({model} after {' + '.join(path)})"
        print(f"  {name:30s} {on or '(never: ' + NEVER_ON_SUITE.get(name, '?') + ')'}")
    per_model = {m: sum(1 for d in direct.values() if m in d) for m in SUITE}
    print(f"rules firing per model: {per_model}; on some model: "
          f"{sum(1 for d in direct.values() if d)} of {len(RULES)}")  # fmt: skip


def _reaches(model: str, path: list[str], target: str) -> bool:
    """Whether `target` fires after applying the rules of `path` in turn (at any of their
    locations)."""
    frontier = [_imported(model, "test").graph]
    for step in path:
        rule = RULES[step]
        nxt = {}
        for g in frontier:
            for m in rule.match(g):
                new = rule.apply(g, m)
                nxt.setdefault(new.structure_hash(), new)
        frontier = list(nxt.values())
    return any(RULES[target].match(g) for g in frontier)


def test_rules_fire_on_the_suite_models() -> None:
    direct = _direct("test")
    _print_table(direct, "test")
    fired = {name for name, d in direct.items() if d}
    assert len(fired) >= 20
    assert fired == set(RULES) - set(WITNESSES) - set(NEVER_ON_SUITE)
    for target, (model, path) in WITNESSES.items():
        assert _reaches(model, path, target), (target, model, path)


@pytest.mark.parametrize("model", SUITE)
def test_every_rewrite_of_a_suite_model_keeps_its_outputs(model: str) -> None:
    from tunelab.workers.graphs.execute import compare, random_inputs, run

    imp = _imported(model, "test")
    g = imp.graph
    cands = find_candidates(g)
    assert cands
    for seed in (0, 1):
        inputs = random_inputs(g, seed, like=imp.inputs)
        want = run(g, imp.constants, inputs)
        for c in cands:
            diff = compare(run(c.graph, imp.constants, inputs), want, rtol=1e-3, atol=1e-4)
            assert diff is None, (c.rule, c.location, diff)


def test_scalar_reaches_the_query_weights_step_by_step() -> None:
    """fold-scalar-into-linear's chain on BERT: the attention scale moves into matmul's
    lhs, through the transpose and reshape, and folds into the query linear."""
    g = _imported("bert", "test").graph
    for step in ("scalar-into-matmul-lhs", "scalar-through-layout", "scalar-through-layout",
                 "fold-scalar-into-linear"):  # fmt: skip
        matches = RULES[step].match(g)
        assert matches, step
        g = RULES[step].apply(g, matches[0])
    folded = g.constant_nodes()
    scales = [n for n in g.nodes if n.op == "mul_scalar"]
    # layer 0's scale now multiplies the query weight and bias (folded); layer 1 keeps its own
    assert sum(n.name in folded for n in scales) == 2
    assert sum(n.name not in folded for n in scales) == 1


@pytest.mark.slow
def test_rules_fire_on_the_cpu_size_models_and_candidates_are_fast() -> None:
    import time

    direct = _direct("cpu")
    _print_table(direct, "cpu")
    assert {name for name, d in direct.items() if d} == set(RULES) - set(WITNESSES) - set(
        NEVER_ON_SUITE
    )
    g = _imported("bert", "cpu").graph
    find_candidates(g)
    start = time.perf_counter()
    cands = find_candidates(g)
    elapsed = time.perf_counter() - start
    print(f"find_candidates on bert cpu ({len(g)} nodes): {len(cands)} in {elapsed:.3f} s")
    assert elapsed < 2.0
