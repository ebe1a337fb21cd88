"""Rules over `linear` and `matmul`: merging the linears that share an input (Q/K/V),
linear <-> matmul + add, chains, distributivity, scalars and transposes through matmul."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from tunelab.workers.graph_rewrite.rules import terms as t
from tunelab.workers.graph_rewrite.rules.core import (
    LAYOUT_OPS,
    SCALAR_OPS,
    Builder,
    Edit,
    Example,
    Index,
    Match,
    Rule,
    is_last_two_transpose,
    last_two,
    other,
)
from tunelab.workers.graphs.ir import Node

MAX_GROUP = 4  # siblings beyond this are merged in windows of consecutive ones only


def _bias(n: Node) -> str | None:
    return n.inputs[2] if len(n.inputs) > 2 else None


def _const_linear(idx: Index, n: Node) -> bool:
    """A linear with a 2-D constant weight (and a constant bias, if any)."""
    if n.op != "linear" or len(idx.shape(n.inputs[1])) != 2:
        return False
    return all(idx.is_const(v) for v in n.inputs[1:])


def _linear_example(b: Builder, x: str, out: int, bias: bool) -> str:
    d = b.graph.types[x].shape[-1]
    ins = [x, b.const(out, d)] + ([b.const(out)] if bias else [])
    return b.op("linear", *ins)


class MergeSiblings(Rule):
    """k linears (or matmuls by a constant matrix) reading the same input, merged into
    one over concatenated weights, its output split."""

    root_ops = ("linear", "matmul")

    def __init__(self, op: str, k: int) -> None:
        self.op, self.k = op, k
        self.root_ops = (op,)
        self.name = f"merge-{op}-{k}"
        if op == "linear":
            self.description = (
                f"{k} linears sharing their input -> split(linear(x, concat(W..), concat(b..)))"
            )
            self.inverse = "unmerge-linear"
        else:
            self.description = (
                f"{k} matmuls of the same x by constant matrices -> split(matmul(x, concat(W..)))"
            )

    def _ok(self, idx: Index, n: Node, x: str) -> bool:
        if n.op != self.op or n.inputs[0] != x or x in n.inputs[1:]:
            return False
        if self.op == "linear":
            return _const_linear(idx, n)
        return len(idx.shape(n.inputs[1])) == 2 and idx.is_const(n.inputs[1])

    def match(self, graph, index=None) -> list[Match]:
        idx = index if index is not None else Index(graph)
        found = []
        for x, users in idx.users.items():
            if idx.is_const(x):
                continue
            groups: dict[tuple, list[Node]] = {}
            for n in users:
                if self._ok(idx, n, x):
                    key = (len(n.inputs), idx.types[n.inputs[1]].dtype)
                    groups.setdefault(key, []).append(n)
            for group in groups.values():
                if len(group) < self.k:
                    continue
                if len(group) <= MAX_GROUP:
                    combos = itertools.combinations(group, self.k)
                else:
                    combos = (group[i : i + self.k] for i in range(len(group) - self.k + 1))
                for combo in combos:
                    found.append(self._m(combo, x=x, ins=[list(n.inputs) for n in combo],
                                         outs=[n.outputs[0] for n in combo]))  # fmt: skip
        found.sort(key=lambda m: idx.key(m.location))
        return found

    def rewrite(self, e: Edit, m: Match) -> None:
        ins = m["ins"]
        axis = 0 if self.op == "linear" else 1  # the weights' output-feature axis
        sizes = [e.graph.types[i[1]].shape[axis] for i in ins]
        args = [m["x"], e.op("concat", *[i[1] for i in ins], dim=axis)]
        if len(ins[0]) > 2:
            args.append(e.op("concat", *[i[2] for i in ins], dim=0))
        y = e.op(self.op, *args)
        rank = len(e.graph.types[y].shape)
        parts = e.node("split", [y], {"dim": rank - 1, "sizes": sizes}, outputs=self.k)
        for old, new in zip(m["outs"], parts, strict=True):
            e.replace(old, new)

    def example(self, b: Builder, variant: int) -> Example:
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        if self.op == "linear":
            outs = [_linear_example(b, x, 6 + 2 * i, bias=variant == 0) for i in range(self.k)]
        else:
            d = b.graph.types[x].shape[-1]
            outs = [b.op("matmul", x, b.const(d, 5 + i)) for i in range(self.k)]
        extra = b.op("relu", outs[0])  # a second reader of a merged output
        return b.build(*outs, extra)

    def terms(self):
        x = t.var("x")
        ws = [t.var(f"W{i}") for i in range(self.k)]
        if self.op == "matmul":
            y = t.matmul(x, t.concat(-1, *ws))
            return list(zip([t.matmul(x, w) for w in ws], t.split(-1, y, self.k), strict=True))
        bs = [t.var(f"b{i}") for i in range(self.k)]
        y = t.linear(x, t.concat(-2, *ws), t.concat(-1, *bs))
        y0 = t.linear(x, t.concat(-2, *ws))
        pairs = list(zip([t.linear(x, w, bb) for w, bb in zip(ws, bs, strict=True)],
                         t.split(-1, y, self.k), strict=True))  # fmt: skip
        pairs += list(zip([t.linear(x, w) for w in ws], t.split(-1, y0, self.k), strict=True))
        return pairs


class UnmergeLinear(Rule):
    name = "unmerge-linear"
    description = "split(linear(x, W, b)) on the output features -> one linear per part"
    root_ops = ("split",)
    inverse = "merge-linear-2"

    def match_at(self, idx: Index, node: Node) -> Iterator[Match]:
        y = node.inputs[0]
        lin = idx.made_by(y, "linear")
        if lin is None or not _const_linear(idx, lin) or not idx.sole_user(y, node):
            return
        if node.attrs["dim"] not in (-1, idx.rank(y) - 1):
            return
        yield self._m([lin, node], lin=list(lin.inputs), sizes=list(node.attrs["sizes"]),
                      outs=list(node.outputs))  # fmt: skip

    def rewrite(self, e: Edit, m: Match) -> None:
        x, w, *bias = m["lin"]
        n = len(m["outs"])
        ws = e.node("split", [w], {"dim": 0, "sizes": m["sizes"]}, outputs=n)
        bs = e.node("split", bias, {"dim": 0, "sizes": m["sizes"]}, outputs=n) if bias else []
        for k, old in enumerate(m["outs"]):
            e.replace(old, e.op("linear", x, ws[k], *([bs[k]] if bias else [])))

    def example(self, b: Builder, variant: int) -> Example:
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        sizes = [4, 6] if variant == 0 else [8, 8, 16]
        y = _linear_example(b, x, sum(sizes), bias=variant == 0)
        parts = b.nodes("split", y, outputs=len(sizes), dim=-1 if variant else 1, sizes=sizes)
        return b.build(*parts)

    def terms(self):
        x, w, bb = t.var("x"), t.var("W"), t.var("b")
        pairs = []
        for bias in (bb, None):
            src = t.split(-1, t.linear(x, w, bias), 2)
            ws = t.split(-2, w, 2)
            bs = t.split(-1, bb, 2) if bias is not None else [None, None]
            pairs += [(s, t.linear(x, wk, bk)) for s, wk, bk in zip(src, ws, bs, strict=True)]
        return pairs


class LinearToMatmul(Rule):
    name = "linear-to-matmul"
    description = "linear(x, W, b) -> matmul(x, transpose(W)) + b"
    root_ops = ("linear",)
    inverse = "matmul-add-to-linear"

    def match_at(self, idx, node):
        if len(idx.shape(node.inputs[1])) == 2:
            yield self._m([node], ins=list(node.inputs), out=node.outputs[0])

    def rewrite(self, e, m):
        x, w, *bias = m["ins"]
        y = e.op("matmul", x, e.op("transpose", w, dim0=0, dim1=1))
        e.replace(m["out"], e.op("add", y, bias[0]) if bias else y)

    def example(self, b, variant):
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        return b.build(_linear_example(b, x, 5 + variant, bias=variant == 0))

    def terms(self):
        x, w, bb = t.var("x"), t.var("W"), t.var("b")
        return [(t.linear(x, w, bb), t.add(t.matmul(x, t.T(w)), bb)),
                (t.linear(x, w), t.matmul(x, t.T(w)))]  # fmt: skip


class MatmulAddToLinear(Rule):
    name = "matmul-add-to-linear"
    description = "matmul(x, W) + b (W 2-D, b a vector of out features) -> linear(x, W^T, b)"
    root_ops = ("add",)
    inverse = "linear-to-matmul"

    def match_at(self, idx, node):
        for mm_out in dict.fromkeys(node.inputs):
            mm = idx.made_by(mm_out, "matmul")
            bias = other(node, mm_out)
            if mm is None or bias is None or not idx.sole_user(mm_out, node):
                continue
            w = mm.inputs[1]
            wshape, bshape = idx.shape(w), idx.shape(bias)
            if len(wshape) != 2 or idx.rank(mm.inputs[0]) < 1 or not idx.is_const(w):
                continue
            if bshape[-1:] != wshape[1:] or any(d != 1 for d in bshape[:-1]):
                continue
            if idx.shape(node.outputs[0]) != idx.shape(mm_out):
                continue
            yield self._m([mm, node], x=mm.inputs[0], w=w, b=bias, out=node.outputs[0])

    def rewrite(self, e, m):
        b = m["b"]
        if len(e.graph.types[b].shape) != 1:
            b = e.op("reshape", b, shape=[e.graph.types[b].shape[-1]])
        wt = e.op("transpose", m["w"], dim0=0, dim1=1)
        e.replace(m["out"], e.op("linear", m["x"], wt, b))

    def example(self, b, variant):
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        d = b.graph.types[x].shape[-1]
        y = b.op("matmul", x, b.const(d, 5))
        bias = b.const(5) if variant == 0 else b.const(1, 1, 5)
        return b.build(b.op("add", y, bias) if variant == 0 else b.op("add", bias, y))

    def terms(self):
        x, w, bb = t.var("x"), t.var("W"), t.var("b")
        tgt = t.linear(x, t.T(w), bb)
        return [(t.add(t.matmul(x, w), bb), tgt), (t.add(bb, t.matmul(x, w)), tgt)]


class MatmulToLinear(Rule):
    name = "matmul-to-linear"
    description = "matmul(x, W) with W a 2-D constant -> linear(x, W^T)"
    root_ops = ("matmul",)
    inverse = "linear-to-matmul"

    def match_at(self, idx, node):
        w = node.inputs[1]
        if len(idx.shape(w)) == 2 and idx.is_const(w) and not idx.is_const(node.inputs[0]):
            yield self._m([node], x=node.inputs[0], w=w, out=node.outputs[0])

    def rewrite(self, e, m):
        wt = e.op("transpose", m["w"], dim0=0, dim1=1)
        e.replace(m["out"], e.op("linear", m["x"], wt))

    def example(self, b, variant):
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        return b.build(b.op("matmul", x, b.const(b.graph.types[x].shape[-1], 7)))

    def terms(self):
        x, w = t.var("x"), t.var("W")
        return [(t.matmul(x, w), t.linear(x, t.T(w)))]


class MergeLinearChain(Rule):
    name = "merge-linear-chain"
    description = "linear(linear(x, W1, b1), W2, b2) -> linear(x, W2 W1, W2 b1 + b2)"
    root_ops = ("linear",)

    def match_at(self, idx, node):
        h = node.inputs[0]
        inner = idx.made_by(h, "linear")
        if inner is None or not _const_linear(idx, node) or not _const_linear(idx, inner):
            return
        # the inner linear stays where others read it: the merged one may still be
        # cheaper (fewer input features)
        yield self._m([inner, node], x=inner.inputs[0], w1=inner.inputs[1], b1=_bias(inner),
                      w2=node.inputs[1], b2=_bias(node), out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        w = e.op("matmul", m["w2"], m["w1"])
        b1, b2 = m["b1"], m["b2"]
        if b1 is not None:
            bias: list[str] = [e.op("linear", b1, m["w2"], *([b2] if b2 else []))]
        else:
            bias = [b2] if b2 else []
        e.replace(m["out"], e.op("linear", m["x"], w, *bias))

    def example(self, b, variant):
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        h = _linear_example(b, x, 12, bias=True)
        y = _linear_example(b, h, 6, bias=variant == 0)
        return b.build(y) if variant == 0 else b.build(y, b.op("relu", h))

    def terms(self):
        x, w1, b1, w2, b2 = (t.var(n) for n in ("x", "W1", "b1", "W2", "b2"))
        w = t.matmul(w2, w1)
        return [
            (t.linear(t.linear(x, w1, b1), w2, b2), t.linear(x, w, t.linear(b1, w2, b2))),
            (t.linear(t.linear(x, w1, b1), w2), t.linear(x, w, t.linear(b1, w2))),
            (t.linear(t.linear(x, w1), w2, b2), t.linear(x, w, b2)),
            (t.linear(t.linear(x, w1), w2), t.linear(x, w)),
        ]


class FoldScalarIntoLinear(Rule):
    name = "fold-scalar-into-linear"
    description = "mul/div_scalar(linear(x, W, b), s) -> linear(x, W*s, b*s) (folded)"
    root_ops = SCALAR_OPS

    def match_at(self, idx, node):
        h = node.inputs[0]
        lin = idx.made_by(h, "linear")
        if lin is not None and _const_linear(idx, lin) and idx.sole_user(h, node):
            yield self._m([lin, node], lin=list(lin.inputs), op=node.op,
                          value=node.attrs["value"], out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, *params = m["lin"]
        scaled = [e.op(m["op"], p, value=m["value"]) for p in params]
        e.replace(m["out"], e.op("linear", x, *scaled))

    def example(self, b, variant):
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        y = _linear_example(b, x, 6, bias=variant == 0)
        op = "mul_scalar" if variant == 0 else "div_scalar"
        return b.build(b.op(op, y, value=0.125 if variant == 0 else 3.0))

    def terms(self):
        x, w, bb, s = t.var("x"), t.var("W"), t.var("b"), t.svar("s")
        pairs = []
        for op in SCALAR_OPS:
            pairs.append((t.scalar(op, t.linear(x, w, bb), s),
                          t.linear(x, t.scalar(op, w, s), t.scalar(op, bb, s))))  # fmt: skip
            pairs.append((t.scalar(op, t.linear(x, w), s), t.linear(x, t.scalar(op, w, s))))
        return pairs


class FoldScalarIntoProjection(Rule):
    name = "fold-scalar-into-projection"
    description = (
        "mul/div_scalar(matmul(L(linear(x, W, b)), c)), L a chain of transpose/permute/"
        "reshape -> the scalar folded into W and b (attention's 1/sqrt(d) into Wq)"
    )
    root_ops = SCALAR_OPS

    def match_at(self, idx, node):
        mm_out = node.inputs[0]
        mm = idx.made_by(mm_out, "matmul")
        if mm is None or not idx.sole_user(mm_out, node) or mm.inputs[0] == mm.inputs[1]:
            return
        for side, v in enumerate(mm.inputs):
            chain, reader = [], mm
            while (lay := idx.made_by(v, *LAYOUT_OPS)) is not None and idx.sole_user(v, reader):
                chain.append(lay)
                reader, v = lay, lay.inputs[0]
            lin = idx.made_by(v, "linear")
            if lin is None or not _const_linear(idx, lin) or not idx.sole_user(v, reader):
                continue
            chain.reverse()
            yield self._m([lin, *chain, mm, node], side=side, lin=list(lin.inputs),
                          chain=[(n.op, dict(n.attrs)) for n in chain], mm=list(mm.inputs),
                          op=node.op, value=node.attrs["value"], out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, *params = m["lin"]
        y = e.op("linear", x, *[e.op(m["op"], p, value=m["value"]) for p in params])
        for op, attrs in m["chain"]:
            y = e.node(op, [y], attrs)[0]
        ins = list(m["mm"])
        ins[m["side"]] = y
        e.replace(m["out"], e.op("matmul", *ins))

    def example(self, b, variant):
        if variant == 0:
            y = _linear_example(b, b.input(4, 8), 6, bias=True)
            return b.build(b.op("mul_scalar", b.op("matmul", b.input(3, 4), y), value=0.25))
        x = b.input(2, 3, 16)
        q = b.op("transpose", b.op("reshape", _linear_example(b, x, 16, bias=True),
                                   shape=[2, 3, 2, 8]), dim0=1, dim1=2)  # fmt: skip
        k = b.op("transpose", b.op("reshape", _linear_example(b, x, 16, bias=False),
                                   shape=[2, 3, 2, 8]), dim0=1, dim1=2)  # fmt: skip
        s = b.op("matmul", q, b.op("transpose", k, dim0=2, dim1=3))
        return b.build(b.op("div_scalar", s, value=2.0))

    def terms(self):
        x, w, bb, c, s = t.var("x"), t.var("W"), t.var("b"), t.var("c"), t.svar("s")
        i, j, p = t.ivar("i"), t.ivar("j"), t.ivar("p")
        chains = [lambda v: v, lambda v: t.tr(i, j, t.reshape(p, v)),
                  lambda v: t.perm(p, t.tr(i, j, v))]  # fmt: skip
        pairs = []
        for op in SCALAR_OPS:
            for lay in chains:
                for bias in (bb, None):
                    scaled_b = t.scalar(op, bb, s) if bias is not None else None
                    old = lay(t.linear(x, w, bias))
                    new = lay(t.linear(x, t.scalar(op, w, s), scaled_b))
                    pairs.append((t.scalar(op, t.matmul(old, c), s), t.matmul(new, c)))
                    pairs.append((t.scalar(op, t.matmul(c, old), s), t.matmul(c, new)))
        return pairs


class FoldAddIntoLinear(Rule):
    name = "fold-add-into-linear"
    description = (
        "linear(x, W, b) + c, c constant -> linear(x, W, b + c) (c a vector of out "
        "features) or linear(x, W) + (b + c): the constants fold"
    )
    root_ops = ("add",)

    def match_at(self, idx, node):
        for h in dict.fromkeys(node.inputs):
            lin = idx.made_by(h, "linear")
            c = other(node, h)
            if lin is None or c is None or not idx.is_const(c) or not _const_linear(idx, lin):
                continue
            if not idx.sole_user(h, node) or idx.shape(node.outputs[0]) != idx.shape(h):
                continue
            cs, out = idx.shape(c), idx.shape(h)[-1]
            vector = cs[-1:] in ((out,), (1,)) and all(d == 1 for d in cs[:-1])
            if not vector and _bias(lin) is None:
                continue  # nothing would fold
            yield self._m([lin, node], lin=list(lin.inputs), c=c, vector=vector,
                          out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, w, *bias = m["lin"]
        c = m["c"]
        if m["vector"]:
            out = e.graph.types[w].shape[0]
            cv = e.op("reshape", c, shape=[e.graph.types[c].shape[-1] if e.graph.types[c].shape
                                           else 1])  # fmt: skip
            if e.graph.types[cv].shape != (out,):
                cv = e.op("expand", cv, shape=[out])
            e.replace(m["out"], e.op("linear", x, w, e.op("add", bias[0], cv) if bias else cv))
        else:
            e.replace(m["out"], e.op("add", e.op("linear", x, w), e.op("add", bias[0], c)))

    def example(self, b, variant):
        x = b.input(4, 8) if variant == 0 else b.input(1, 3, 16)
        if variant == 0:
            return b.build(b.op("add", _linear_example(b, x, 6, bias=False), b.const(1, 6)))
        y1 = b.op("add", b.const(1, 3, 6), _linear_example(b, x, 6, bias=True))
        return b.build(y1, b.op("add", _linear_example(b, x, 5, bias=True), b.const(1)))

    def terms(self):
        x, w, bb, c = t.var("x"), t.var("W"), t.var("b"), t.var("c")
        return [
            (t.add(t.linear(x, w, bb), c), t.linear(x, w, t.add(bb, c))),
            (t.add(c, t.linear(x, w)), t.linear(x, w, c)),
            (t.add(t.linear(x, w, bb), c), t.add(t.linear(x, w), t.add(bb, c))),
        ]


class LinearDistributeAdd(Rule):
    name = "linear-distribute-add"
    description = "linear(p + q, W, b) -> linear(p, W, b) + linear(q, W)"
    root_ops = ("linear",)
    inverse = "linear-factor-add"

    def match_at(self, idx, node):
        s = node.inputs[0]
        add = idx.made_by(s, "add")
        if add is None or not _const_linear(idx, node):
            return
        p, q = add.inputs
        d = idx.shape(node.inputs[1])[1]
        if p != q and idx.shape(p)[-1:] == (d,) and idx.shape(q)[-1:] == (d,):
            yield self._m([add, node], p=p, q=q, lin=list(node.inputs), out=node.outputs[0])

    def rewrite(self, e, m):
        _, w, *bias = m["lin"]
        y = e.op("add", e.op("linear", m["p"], w, *bias), e.op("linear", m["q"], w))
        e.replace(m["out"], y)

    def example(self, b, variant):
        x = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        shape = b.graph.types[x].shape
        y = b.op("add", x, b.const(*shape) if variant == 0 else b.input(shape[-1]))
        return b.build(_linear_example(b, y, 6, bias=variant == 0), y)

    def terms(self):
        p, q, w, bb = t.var("p"), t.var("q"), t.var("W"), t.var("b")
        return [
            (t.linear(t.add(p, q), w, bb), t.add(t.linear(p, w, bb), t.linear(q, w))),
            (t.linear(t.add(p, q), w), t.add(t.linear(p, w), t.linear(q, w))),
        ]


class LinearFactorAdd(Rule):
    name = "linear-factor-add"
    description = "linear(p, W, b1) + linear(q, W, b2) -> linear(p + q, W, b1 + b2)"
    root_ops = ("add",)
    inverse = "linear-distribute-add"

    def match_at(self, idx, node):
        a, c = node.inputs
        la, lc = idx.made_by(a, "linear"), idx.made_by(c, "linear")
        if la is None or lc is None or a == c or la.inputs[1] != lc.inputs[1]:
            return
        if not (idx.sole_user(a, node) and idx.sole_user(c, node)):
            return
        p, q = la.inputs[0], lc.inputs[0]
        try:
            import torch

            lead = torch.broadcast_shapes(idx.shape(p), idx.shape(q))
        except RuntimeError:
            return
        if lead[:-1] + idx.shape(a)[-1:] != idx.shape(node.outputs[0]):
            return
        yield self._m([la, lc, node], p=p, q=q, w=la.inputs[1], b1=_bias(la), b2=_bias(lc),
                      out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        b1, b2 = m["b1"], m["b2"]
        bias = [e.op("add", b1, b2)] if b1 and b2 else [b for b in (b1, b2) if b]
        y = e.op("linear", e.op("add", m["p"], m["q"]), m["w"], *bias)
        e.replace(m["out"], y)

    def example(self, b, variant):
        p = b.input(4, 8) if variant == 0 else b.input(2, 3, 16)
        q = b.input(*b.graph.types[p].shape)
        d = b.graph.types[p].shape[-1]
        w = b.const(6, d)
        y1 = b.op("linear", p, w, b.const(6))
        y2 = b.op("linear", q, w, b.const(6)) if variant == 0 else b.op("linear", q, w)
        return b.build(b.op("add", y1, y2))

    def terms(self):
        p, q, w, b1, b2 = (t.var(n) for n in ("p", "q", "W", "b1", "b2"))
        s = t.add(p, q)
        return [
            (t.add(t.linear(p, w, b1), t.linear(q, w, b2)), t.linear(s, w, t.add(b1, b2))),
            (t.add(t.linear(p, w, b1), t.linear(q, w)), t.linear(s, w, b1)),
            (t.add(t.linear(p, w), t.linear(q, w, b2)), t.linear(s, w, b2)),
            (t.add(t.linear(p, w), t.linear(q, w)), t.linear(s, w)),
        ]


# -- matmul ---------------------------------------------------------------------------------


def _mm_example(b: Builder, variant: int) -> tuple[str, str]:
    """Two batched operands of a matmul."""
    if variant == 0:
        return b.input(5, 4), b.input(4, 3)
    return b.input(2, 3, 6, 4), b.input(2, 3, 4, 5)


class ScalarIntoMatmul(Rule):
    root_ops = SCALAR_OPS
    inverse = "scalar-out-of-matmul"

    def __init__(self, side: int) -> None:
        self.side = side
        which = ("lhs", "rhs")[side]
        self.name = f"scalar-into-matmul-{which}"
        self.description = f"mul/div_scalar(matmul(a, b), s) -> matmul with the {which} scaled"

    def match_at(self, idx, node):
        mm_out = node.inputs[0]
        mm = idx.made_by(mm_out, "matmul")
        if mm is not None and idx.sole_user(mm_out, node):
            yield self._m([mm, node], ins=list(mm.inputs), op=node.op,
                          value=node.attrs["value"], out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        ins = list(m["ins"])
        ins[self.side] = e.op(m["op"], ins[self.side], value=m["value"])
        e.replace(m["out"], e.op("matmul", *ins))

    def example(self, b, variant):
        a, c = _mm_example(b, variant)
        op = "mul_scalar" if variant == 0 else "div_scalar"
        return b.build(b.op(op, b.op("matmul", a, c), value=0.5 if variant == 0 else 8.0))

    def terms(self):
        a, c, s = t.var("a"), t.var("b"), t.svar("s")
        pairs = []
        for op in SCALAR_OPS:
            ins = [a, c]
            ins[self.side] = t.scalar(op, ins[self.side], s)
            pairs.append((t.scalar(op, t.matmul(a, c), s), t.matmul(*ins)))
        return pairs


class ScalarOutOfMatmul(Rule):
    name = "scalar-out-of-matmul"
    description = "matmul(s(a), b) or matmul(a, s(b)) -> s(matmul(a, b)) for mul/div_scalar"
    root_ops = ("matmul",)
    inverse = "scalar-into-matmul-lhs"

    def match_at(self, idx, node):
        for side, v in enumerate(node.inputs):
            sc = idx.made_by(v, *SCALAR_OPS)
            if sc is not None and idx.sole_user(v, node) and node.inputs[0] != node.inputs[1]:
                yield self._m([sc, node], side=side, inner=sc.inputs[0], ins=list(node.inputs),
                              op=sc.op, value=sc.attrs["value"], out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        ins = list(m["ins"])
        ins[m["side"]] = m["inner"]
        e.replace(m["out"], e.op(m["op"], e.op("matmul", *ins), value=m["value"]))

    def example(self, b, variant):
        a, c = _mm_example(b, variant)
        if variant == 0:
            return b.build(b.op("matmul", b.op("mul_scalar", a, value=3.0), c))
        return b.build(b.op("matmul", a, b.op("div_scalar", c, value=4.0)))

    def terms(self):
        a, c, s = t.var("a"), t.var("b"), t.svar("s")
        pairs = []
        for op in SCALAR_OPS:
            out = t.scalar(op, t.matmul(a, c), s)
            pairs.append((t.matmul(t.scalar(op, a, s), c), out))
            pairs.append((t.matmul(a, t.scalar(op, c, s)), out))
        return pairs


class MatmulTransposedRhsSwap(Rule):
    name = "matmul-transposed-rhs-swap"
    description = "matmul(a, b^T) -> (matmul(b, a^T))^T (transposes of the last two dims)"
    root_ops = ("matmul",)

    def match_at(self, idx, node):
        a, bt = node.inputs
        tn = idx.made_by(bt, "transpose")
        if tn is None or idx.rank(a) < 2 or not is_last_two_transpose(tn, idx.rank(bt)):
            return
        yield self._m([tn, node], a=a, b=tn.inputs[0], out=node.outputs[0])

    def rewrite(self, e, m):
        ra = len(e.graph.types[m["a"]].shape)
        at = e.op("transpose", m["a"], **last_two(ra))
        y = e.op("matmul", m["b"], at)
        e.replace(m["out"], e.op("transpose", y, **last_two(len(e.graph.types[y].shape))))

    def example(self, b, variant):
        if variant == 0:
            a, c = b.input(5, 4), b.input(3, 4)
        else:
            a, c = b.input(2, 3, 6, 4), b.input(2, 3, 5, 4)
        rc = len(b.graph.types[c].shape)
        ct = (
            b.op("transpose", c, dim0=rc - 1, dim1=rc - 2)
            if variant
            else b.op("transpose", c, dim0=-2, dim1=-1)
        )
        return b.build(b.op("matmul", a, ct))

    def terms(self):
        a, c = t.var("a"), t.var("b")
        return [(t.matmul(a, t.T(c)), t.T(t.matmul(c, t.T(a))))]


class MatmulDoubleTranspose(Rule):
    name = "matmul-double-transpose"
    description = "matmul(a^T, b^T) -> (matmul(b, a))^T"
    root_ops = ("matmul",)
    inverse = "transpose-of-matmul"

    def match_at(self, idx, node):
        ta, tb = (idx.made_by(v, "transpose") for v in node.inputs)
        if ta is None or tb is None:
            return
        if is_last_two_transpose(ta, idx.rank(node.inputs[0])) and is_last_two_transpose(
            tb, idx.rank(node.inputs[1])
        ):
            yield self._m([ta, tb, node], a=ta.inputs[0], b=tb.inputs[0], out=node.outputs[0])

    def rewrite(self, e, m):
        y = e.op("matmul", m["b"], m["a"])
        e.replace(m["out"], e.op("transpose", y, **last_two(len(e.graph.types[y].shape))))

    def example(self, b, variant):
        a, c = (
            (b.input(4, 5), b.input(3, 4)) if variant == 0 else (b.input(2, 4, 6), b.input(2, 5, 4))
        )
        ta = b.op("transpose", a, dim0=-2, dim1=-1)
        tc = b.op("transpose", c, dim0=-1, dim1=-2)
        return b.build(b.op("matmul", ta, tc))

    def terms(self):
        a, c = t.var("a"), t.var("b")
        return [(t.matmul(t.T(a), t.T(c)), t.T(t.matmul(c, a)))]


class TransposeOfMatmul(Rule):
    name = "transpose-of-matmul"
    description = "(matmul(a, b))^T -> matmul(b^T, a^T) (last two dims)"
    root_ops = ("transpose",)
    inverse = "matmul-double-transpose"

    def match_at(self, idx, node):
        y = node.inputs[0]
        mm = idx.made_by(y, "matmul")
        if mm is None or not is_last_two_transpose(node, idx.rank(y)):
            return
        if min(idx.rank(v) for v in mm.inputs) >= 2 and idx.sole_user(y, node):
            yield self._m([mm, node], a=mm.inputs[0], b=mm.inputs[1], out=node.outputs[0])

    def rewrite(self, e, m):
        ta = e.op("transpose", m["a"], **last_two(len(e.graph.types[m["a"]].shape)))
        tb = e.op("transpose", m["b"], **last_two(len(e.graph.types[m["b"]].shape)))
        e.replace(m["out"], e.op("matmul", tb, ta))

    def example(self, b, variant):
        a, c = _mm_example(b, variant)
        y = b.op("matmul", a, c)
        r = len(b.graph.types[y].shape)
        return b.build(b.op("transpose", y, dim0=r - 1, dim1=r - 2))

    def terms(self):
        a, c = t.var("a"), t.var("b")
        return [(t.T(t.matmul(a, c)), t.matmul(t.T(c), t.T(a)))]


class MatmulFactorAdd(Rule):
    name = "matmul-factor-add"
    description = "matmul(x, A) + matmul(x, B) -> matmul(x, A + B) (and with x on the right)"
    root_ops = ("add",)

    def match_at(self, idx, node):
        a, c = node.inputs
        ma, mc = idx.made_by(a, "matmul"), idx.made_by(c, "matmul")
        if ma is None or mc is None or a == c:
            return
        if not (idx.sole_user(a, node) and idx.sole_user(c, node)):
            return
        for side in (0, 1):
            shared, rest = side, 1 - side
            if ma.inputs[shared] != mc.inputs[shared]:
                continue
            pa, pc = ma.inputs[rest], mc.inputs[rest]
            if idx.shape(pa) == idx.shape(pc) and idx.shape(a) == idx.shape(c):
                yield self._m([ma, mc, node], side=side, x=ma.inputs[shared], a=pa, b=pc,
                              out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        s = e.op("add", m["a"], m["b"])
        ins = [m["x"], s] if m["side"] == 0 else [s, m["x"]]
        e.replace(m["out"], e.op("matmul", *ins))

    def example(self, b, variant):
        x = b.input(5, 4) if variant == 0 else b.input(2, 4, 6)
        if variant == 0:
            y = b.op("add", b.op("matmul", x, b.const(4, 3)), b.op("matmul", x, b.const(4, 3)))
        else:
            y = b.op("add", b.op("matmul", b.const(3, 4), x), b.op("matmul", b.const(3, 4), x))
        return b.build(y)

    def terms(self):
        x, a, c = t.var("x"), t.var("A"), t.var("B")
        return [
            (t.add(t.matmul(x, a), t.matmul(x, c)), t.matmul(x, t.add(a, c))),
            (t.add(t.matmul(a, x), t.matmul(c, x)), t.matmul(t.add(a, c), x)),
        ]


RULES: list[Rule] = [
    MergeSiblings("linear", 2),
    MergeSiblings("linear", 3),
    MergeSiblings("matmul", 2),
    MergeSiblings("matmul", 3),
    UnmergeLinear(),
    LinearToMatmul(),
    MatmulAddToLinear(),
    MatmulToLinear(),
    MergeLinearChain(),
    FoldScalarIntoLinear(),
    FoldScalarIntoProjection(),
    FoldAddIntoLinear(),
    LinearDistributeAdd(),
    LinearFactorAdd(),
    ScalarIntoMatmul(0),
    ScalarIntoMatmul(1),
    ScalarOutOfMatmul(),
    MatmulTransposedRhsSwap(),
    MatmulDoubleTranspose(),
    TransposeOfMatmul(),
    MatmulFactorAdd(),
]
