"""Rules over layout operators (transpose, permute, reshape) and over split/concat."""

from __future__ import annotations

from tunelab.workers.graph_rewrite.rules import terms as t
from tunelab.workers.graph_rewrite.rules.core import (
    LAYOUT_OPS,
    SCALAR_OPS,
    Edit,
    Rule,
    norm_dim,
    other,
    transpose_perm,
)

WHY_LAYOUT = (
    "composes concrete permutations and shapes (index arithmetic on attributes), which the "
    "uninterpreted operator theory does not model"
)


def _layout(e: Edit, x: str, perm: list[int]) -> str:
    """x permuted by `perm`: x itself, one transpose for a swap, else a permute."""
    moved = [i for i, p in enumerate(perm) if p != i]
    if not moved:
        return x
    if len(moved) == 2:
        return e.op("transpose", x, dim0=moved[0], dim1=moved[1])
    return e.op("permute", x, dims=perm)


class TransposeCancel(Rule):
    name = "transpose-cancel"
    description = "transpose(transpose(x, i, j), i, j) -> x"
    root_ops = ("transpose",)

    def match_at(self, idx, node):
        inner = idx.made_by(node.inputs[0], "transpose")
        if inner is None:
            return
        r = idx.rank(node.inputs[0])
        a = {norm_dim(node.attrs["dim0"], r), norm_dim(node.attrs["dim1"], r)}
        b = {norm_dim(inner.attrs["dim0"], r), norm_dim(inner.attrs["dim1"], r)}
        if a == b and len(a) == 2:
            yield self._m([inner, node], x=inner.inputs[0], out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], m["x"])

    def example(self, b, variant):
        x = b.input(3, 4) if variant == 0 else b.input(2, 3, 4, 5)
        if variant == 0:
            y = b.op("transpose", b.op("transpose", x, dim0=0, dim1=1), dim0=1, dim1=0)
        else:
            y = b.op("transpose", b.op("transpose", x, dim0=1, dim1=3), dim0=-1, dim1=-3)
        return b.build(b.op("relu", y))

    def terms(self):
        x, i, j = t.var("x"), t.ivar("i"), t.ivar("j")
        return [(t.tr(i, j, t.tr(i, j, x)), x), (t.tr(i, j, t.tr(j, i, x)), x)]


class LayoutCompose(Rule):
    name = "layout-compose"
    description = "transpose/permute of a transpose/permute -> one permute (or nothing)"
    kind = "numeric-only"
    why_numeric_only = WHY_LAYOUT
    root_ops = ("transpose", "permute")

    def match_at(self, idx, node):
        inner = idx.made_by(node.inputs[0], "transpose", "permute")
        if inner is None:
            return
        r = idx.rank(node.inputs[0])
        p, q = transpose_perm(inner, r), transpose_perm(node, r)
        if inner.op == node.op == "transpose" and p == q:
            return  # the same swap twice: transpose-cancel
        yield self._m([inner, node], x=inner.inputs[0], perm=[p[k] for k in q],
                      out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        e.replace(m["out"], _layout(e, m["x"], m["perm"]))

    def example(self, b, variant):
        x = b.input(2, 3, 4) if variant == 0 else b.input(2, 3, 4, 5)
        if variant == 0:
            y = b.op("transpose", b.op("transpose", x, dim0=0, dim1=1), dim0=1, dim1=2)
        else:
            y = b.op("permute", b.op("transpose", x, dim0=1, dim1=2), dims=[0, 3, 1, 2])
        return b.build(y)


class ReshapeReshape(Rule):
    name = "reshape-reshape"
    description = "reshape(reshape(x, s1), s2) -> reshape(x, s2) (or x)"
    kind = "numeric-only"
    why_numeric_only = WHY_LAYOUT
    root_ops = ("reshape",)

    def match_at(self, idx, node):
        inner = idx.made_by(node.inputs[0], "reshape")
        if inner is not None:
            yield self._m([inner, node], x=inner.inputs[0], shape=list(node.attrs["shape"]),
                          out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x = m["x"]
        if tuple(e.graph.types[x].shape) == tuple(e.graph.types[m["out"]].shape):
            e.replace(m["out"], x)
        else:
            e.replace(m["out"], e.op("reshape", x, shape=m["shape"]))

    def example(self, b, variant):
        x = b.input(2, 3, 4) if variant == 0 else b.input(4, 6)
        y = b.op("reshape", x, shape=[6, 4] if variant == 0 else [2, 12])
        return b.build(b.op("reshape", y, shape=[24] if variant == 0 else [4, 6]))


class LayoutIdentity(Rule):
    name = "layout-identity"
    description = "reshape to the same shape, identity permute, transpose(x, i, i) -> x"
    kind = "numeric-only"
    why_numeric_only = WHY_LAYOUT
    root_ops = (*LAYOUT_OPS, "identity")

    def match_at(self, idx, node):
        x = node.inputs[0]
        r = idx.rank(x)
        if node.op == "reshape":
            same = idx.shape(x) == idx.shape(node.outputs[0])
        elif node.op == "identity":
            same = True
        else:
            same = transpose_perm(node, r) == list(range(r))
        if same:
            yield self._m([node], x=x, out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], m["x"])

    def example(self, b, variant):
        x = b.input(2, 3, 4) if variant == 0 else b.input(4, 6)
        if variant == 0:
            y = b.op("permute", b.op("reshape", x, shape=[2, 3, 4]), dims=[0, 1, 2])
        else:
            y = b.op("transpose", b.op("identity", x), dim0=1, dim1=-1)
        return b.build(b.op("relu", y))


def _scalar_layout_terms(scalar_outside: bool) -> list[tuple[t.Term, t.Term]]:
    x, s, i, j, p = t.var("x"), t.svar("s"), t.ivar("i"), t.ivar("j"), t.ivar("p")
    pairs = []
    for op in SCALAR_OPS:
        for lay in (lambda v: t.tr(i, j, v), lambda v: t.perm(p, v), lambda v: t.reshape(p, v)):
            outside, inside = t.scalar(op, lay(x), s), lay(t.scalar(op, x, s))
            pairs.append((outside, inside) if scalar_outside else (inside, outside))
    return pairs


class ScalarThroughLayout(Rule):
    name = "scalar-through-layout"
    description = "mul/div_scalar(layout(x)) -> layout(mul/div_scalar(x)) (transpose, ...)"
    root_ops = SCALAR_OPS
    inverse = "layout-through-scalar"

    def match_at(self, idx, node):
        y = node.inputs[0]
        lay = idx.made_by(y, *LAYOUT_OPS)
        if lay is not None and idx.sole_user(y, node):
            yield self._m([lay, node], x=lay.inputs[0], lay=(lay.op, dict(lay.attrs)),
                          sc=(node.op, dict(node.attrs)), out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        (lop, lattrs), (sop, sattrs) = m["lay"], m["sc"]
        e.replace(m["out"], e.node(lop, [e.node(sop, [m["x"]], sattrs)[0]], lattrs)[0])

    def example(self, b, variant):
        x = b.input(2, 3, 4) if variant == 0 else b.input(3, 5, 2)
        if variant == 0:
            return b.build(b.op("mul_scalar", b.op("transpose", x, dim0=0, dim1=2), value=0.5))
        y = b.op("div_scalar", b.op("reshape", x, shape=[15, 2]), value=3.0)
        return b.build(b.op("mul_scalar", b.op("permute", x, dims=[1, 2, 0]), value=-2.0), y)

    def terms(self):
        return _scalar_layout_terms(scalar_outside=True)


class LayoutThroughScalar(Rule):
    name = "layout-through-scalar"
    description = "layout(mul/div_scalar(x)) -> mul/div_scalar(layout(x))"
    root_ops = LAYOUT_OPS
    inverse = "scalar-through-layout"

    def match_at(self, idx, node):
        y = node.inputs[0]
        sc = idx.made_by(y, *SCALAR_OPS)
        if sc is not None and idx.sole_user(y, node):
            yield self._m([sc, node], x=sc.inputs[0], lay=(node.op, dict(node.attrs)),
                          sc=(sc.op, dict(sc.attrs)), out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        (lop, lattrs), (sop, sattrs) = m["lay"], m["sc"]
        e.replace(m["out"], e.node(sop, [e.node(lop, [m["x"]], lattrs)[0]], sattrs)[0])

    def example(self, b, variant):
        x = b.input(2, 3, 4) if variant == 0 else b.input(3, 5, 2)
        if variant == 0:
            return b.build(b.op("transpose", b.op("mul_scalar", x, value=0.5), dim0=0, dim1=2))
        y = b.op("reshape", b.op("div_scalar", x, value=3.0), shape=[15, 2])
        return b.build(b.op("permute", b.op("mul_scalar", x, value=-2.0), dims=[1, 2, 0]), y)

    def terms(self):
        return _scalar_layout_terms(scalar_outside=False)


# -- split / concat -------------------------------------------------------------------------


def _split_concat_terms(n: int) -> list[tuple[t.Term, t.Term]]:
    i = t.ivar("i")
    xs = [t.var(f"a{k}") for k in range(n)]
    return list(zip(t.split(i, t.concat(i, *xs), n), xs, strict=True))


class ConcatOfSplit(Rule):
    name = "concat-of-split"
    description = "concat of all of a split's outputs, in order, on its axis -> its input"
    root_ops = ("concat",)

    def match_at(self, idx, node):
        sp = idx.made_by(node.inputs[0], "split")
        if sp is None or node.inputs != sp.outputs:
            return
        r = idx.rank(sp.inputs[0])
        if norm_dim(sp.attrs["dim"], r) == norm_dim(node.attrs["dim"], r):
            yield self._m([sp, node], x=sp.inputs[0], out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], m["x"])

    def example(self, b, variant):
        x = b.input(4, 6) if variant == 0 else b.input(2, 3, 8)
        sizes = [2, 4] if variant == 0 else [3, 1, 4]
        parts = b.nodes("split", x, outputs=len(sizes), dim=-1, sizes=sizes)
        return b.build(b.op("concat", *parts, dim=1 if variant == 0 else 2), parts[0])

    def terms(self):
        i, x = t.ivar("i"), t.var("x")
        return [(t.concat(i, *t.split(i, x, n)), x) for n in (2, 3)]


class SplitOfConcat(Rule):
    name = "split-of-concat"
    description = "split(concat(a, b, ..)) on the same axis with the same sizes -> a, b, .."
    root_ops = ("split",)

    def match_at(self, idx, node):
        c = idx.made_by(node.inputs[0], "concat")
        if c is None:
            return
        r = idx.rank(node.inputs[0])
        d = norm_dim(node.attrs["dim"], r)
        if d != norm_dim(c.attrs["dim"], r):
            return
        if [idx.shape(v)[d] for v in c.inputs] == list(node.attrs["sizes"]):
            yield self._m([c, node], parts=list(c.inputs), outs=list(node.outputs))

    def rewrite(self, e, m):
        for old, new in zip(m["outs"], m["parts"], strict=True):
            e.replace(old, new)

    def example(self, b, variant):
        xs = [b.input(4, 2), b.input(4, 3)] if variant == 0 else [b.input(2, 3, 4)] * 2
        d = 1 if variant == 0 else 0
        c = b.op("concat", *xs, dim=d)
        sizes = [b.graph.types[v].shape[d] for v in xs]
        parts = b.nodes("split", c, outputs=2, dim=d - 2 if variant == 0 else d, sizes=sizes)
        return b.build(b.op("relu", parts[0]), parts[1], c)

    def terms(self):
        return _split_concat_terms(2) + _split_concat_terms(3)


class AddOverConcat(Rule):
    name = "add-over-concat"
    description = "concat(a, b) + p -> concat(a + p[:|a|], b + p[|a|:]) (p split on the axis)"
    root_ops = ("add",)
    inverse = "concat-of-adds"

    def match_at(self, idx, node):
        for cv in dict.fromkeys(node.inputs):
            c = idx.made_by(cv, "concat")
            p = other(node, cv)
            if c is None or p is None or not idx.sole_user(cv, node):
                continue
            rc, rp = idx.rank(cv), idx.rank(p)
            d = norm_dim(c.attrs["dim"], rc)
            dp = d - (rc - rp)
            if dp < 0 or idx.shape(p)[dp] != idx.shape(cv)[d] or idx.shape(cv)[d] == 1:
                continue
            if idx.shape(node.outputs[0]) != idx.shape(cv):
                continue
            sizes = [idx.shape(v)[d] for v in c.inputs]
            yield self._m([c, node], parts=list(c.inputs), p=p, dim=d, pdim=dp, sizes=sizes,
                          first=node.inputs[0] == cv, out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        ps = e.node("split", [m["p"]], {"dim": m["pdim"], "sizes": m["sizes"]},
                    outputs=len(m["sizes"]))  # fmt: skip
        adds = [e.op("add", a, q) if m["first"] else e.op("add", q, a)
                for a, q in zip(m["parts"], ps, strict=True)]  # fmt: skip
        e.replace(m["out"], e.op("concat", *adds, dim=m["dim"]))

    def example(self, b, variant):
        if variant == 0:
            c = b.op("concat", b.const(1, 1, 8), b.input(1, 4, 8), dim=1)
            return b.build(b.op("add", c, b.const(1, 5, 8)))
        c = b.op("concat", b.input(2, 3), b.input(2, 5), b.input(2, 1), dim=-1)
        return b.build(b.op("add", b.input(9), c))

    def terms(self):
        i, a, c, p = t.ivar("i"), t.var("a"), t.var("b"), t.var("p")
        p0, p1 = t.split(i, p, 2)
        return [
            (t.add(t.concat(i, a, c), p), t.concat(i, t.add(a, p0), t.add(c, p1))),
            (t.add(p, t.concat(i, a, c)), t.concat(i, t.add(p0, a), t.add(p1, c))),
        ]


class ConcatOfAdds(Rule):
    name = "concat-of-adds"
    description = "concat(a + p, b + q) -> concat(a, b) + concat(p, q)"
    root_ops = ("concat",)
    inverse = "add-over-concat"

    def match_at(self, idx, node):
        adds = [idx.made_by(v, "add") for v in node.inputs]
        if len(node.inputs) < 2 or any(a is None for a in adds):
            return
        if len(set(node.inputs)) != len(node.inputs):
            return
        if not all(idx.sole_user(v, node) for v in node.inputs):
            return
        out = node.outputs[0]
        r = idx.rank(out)
        d = norm_dim(node.attrs["dim"], r)
        us, vs = [], []
        for a, v in zip(adds, node.inputs, strict=True):
            full = [k for k in (0, 1) if idx.shape(a.inputs[k]) == idx.shape(v)]  # type: ignore[union-attr]
            if not full:
                return
            us.append(a.inputs[full[0]])  # type: ignore[union-attr]
            vs.append(a.inputs[1 - full[0]])  # type: ignore[union-attr]
        rv = idx.rank(vs[0])
        dv = d - (r - rv)
        vshapes = [idx.shape(v) for v in vs]
        if dv < 0 or any(len(s) != rv for s in vshapes):
            return
        if any(s[dv] != idx.shape(u)[d] for s, u in zip(vshapes, us, strict=True)):
            return
        if len({s[:dv] + s[dv + 1 :] for s in vshapes}) != 1:
            return
        yield self._m([*adds, node], us=us, vs=vs, dim=d, vdim=dv, out=out)  # type: ignore[list-item]

    def rewrite(self, e, m):
        cu = e.op("concat", *m["us"], dim=m["dim"])
        cv = e.op("concat", *m["vs"], dim=m["vdim"])
        e.replace(m["out"], e.op("add", cu, cv))

    def example(self, b, variant):
        if variant == 0:
            a = b.op("add", b.input(1, 1, 8), b.const(1, 1, 8))
            c = b.op("add", b.input(1, 4, 8), b.const(1, 4, 8))
            return b.build(b.op("concat", a, c, dim=1))
        a = b.op("add", b.input(2, 3), b.input(3))
        c = b.op("add", b.input(5), b.input(2, 5))
        return b.build(b.op("concat", a, c, dim=-1))

    def terms(self):
        i, a, c, p, q = t.ivar("i"), t.var("a"), t.var("b"), t.var("p"), t.var("q")
        return [
            (t.concat(i, t.add(a, p), t.add(c, q)), t.add(t.concat(i, a, c), t.concat(i, p, q)))
        ]


RULES: list[Rule] = [
    TransposeCancel(),
    LayoutCompose(),
    ReshapeReshape(),
    LayoutIdentity(),
    ScalarThroughLayout(),
    LayoutThroughScalar(),
    ConcatOfSplit(),
    SplitOfConcat(),
    AddOverConcat(),
    ConcatOfAdds(),
]
