"""Element-wise rules: reassociating constants so they fold, layer norm's affine part,
and relu through max pooling."""

from __future__ import annotations

from tunelab.workers.graph_rewrite.rules import terms as t
from tunelab.workers.graph_rewrite.rules.core import Rule, other


class ConstReassociate(Rule):
    """op(op(x, c1), c2) -> op(x, op(c1, c2)) for a commutative, associative op."""

    root_ops: tuple[str, ...] = ()

    def __init__(self, op: str) -> None:
        self.op = op
        self.root_ops = (op,)
        self.name = f"{op}-const-reassociate"
        self.description = f"{op}({op}(x, c1), c2) -> {op}(x, {op}(c1, c2)): the constants fold"

    def match_at(self, idx, node):
        for h in dict.fromkeys(node.inputs):
            inner = idx.made_by(h, self.op)
            c2 = other(node, h)
            if inner is None or c2 is None or not idx.is_const(c2) or idx.is_const(h):
                continue
            if not idx.sole_user(h, node):
                continue
            for c1 in dict.fromkeys(inner.inputs):
                x = other(inner, c1)
                if x is not None and idx.is_const(c1) and not idx.is_const(x):
                    yield self._m([inner, node], x=x, c1=c1, c2=c2, out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], e.op(self.op, m["x"], e.op(self.op, m["c1"], m["c2"])))

    def example(self, b, variant):
        if variant == 0:
            x = b.input(2, 3, 4)
            y = b.op(self.op, b.op(self.op, x, b.const(1, 3, 4)), b.const(4))
        else:
            x = b.input(5, 6)
            y = b.op(self.op, b.const(5, 1), b.op(self.op, b.const(6), x))
        return b.build(y)

    def terms(self):
        x, c1, c2 = t.var("x"), t.var("c1"), t.var("c2")
        fn = t.add if self.op == "add" else t.mul
        tgt = fn(x, fn(c1, c2))
        return [(fn(fn(x, c1), c2), tgt), (fn(c2, fn(c1, x)), tgt)]


def _ln_terms() -> tuple[t.Term, t.Term, t.Term, t.Term]:
    x, g, b = t.var("x"), t.var("g"), t.var("b")
    ln0 = t.f("ln0", x)
    return (t.f("layernorm", x, g, b), t.add(t.mul(ln0, g), b),
            t.f("layernorm_w", x, g), t.mul(ln0, g))  # fmt: skip


class LayerNormDecompose(Rule):
    name = "layernorm-decompose-affine"
    description = "layer_norm(x, g, b) -> layer_norm(x) * g + b"
    root_ops = ("layer_norm",)
    inverse = "layernorm-fuse-affine"

    def match_at(self, idx, node):
        if len(node.inputs) >= 2:
            yield self._m([node], ins=list(node.inputs), attrs=dict(node.attrs),
                          out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, g, *bias = m["ins"]
        y = e.op("mul", e.node("layer_norm", [x], m["attrs"])[0], g)
        e.replace(m["out"], e.op("add", y, bias[0]) if bias else y)

    def example(self, b, variant):
        x = b.input(2, 3, 8) if variant == 0 else b.input(4, 6)
        d = b.graph.types[x].shape[-1]
        ins = [x, b.const(d)] + ([b.const(d)] if variant == 0 else [])
        return b.build(b.op("layer_norm", *ins, normalized_shape=[d], eps=1e-5))

    def terms(self):
        full, full_t, wonly, wonly_t = _ln_terms()
        return [(full, full_t), (wonly, wonly_t)]


class LayerNormFuseAffine(Rule):
    name = "layernorm-fuse-affine"
    description = "layer_norm(x) * g + b -> layer_norm(x, g, b)"
    root_ops = ("add",)
    inverse = "layernorm-decompose-affine"

    def match_at(self, idx, node):
        for mv in dict.fromkeys(node.inputs):
            mul = idx.made_by(mv, "mul")
            bias = other(node, mv)
            if mul is None or bias is None or not idx.sole_user(mv, node):
                continue
            for lv in dict.fromkeys(mul.inputs):
                ln = idx.made_by(lv, "layer_norm")
                g = other(mul, lv)
                if ln is None or g is None or len(ln.inputs) != 1 or not idx.sole_user(lv, mul):
                    continue
                ns = tuple(ln.attrs["normalized_shape"])
                if idx.shape(g) == ns and idx.shape(bias) == ns:
                    yield self._m([ln, mul, node], x=ln.inputs[0], g=g, b=bias,
                                  attrs=dict(ln.attrs), out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        e.replace(m["out"], e.node("layer_norm", [m["x"], m["g"], m["b"]], m["attrs"])[0])

    def example(self, b, variant):
        x = b.input(2, 3, 8) if variant == 0 else b.input(4, 6)
        d = b.graph.types[x].shape[-1]
        ln = b.op("layer_norm", x, normalized_shape=[d], eps=1e-5)
        y = b.op("mul", ln, b.const(d)) if variant == 0 else b.op("mul", b.const(d), ln)
        return b.build(b.op("add", y, b.const(d)) if variant == 0 else b.op("add", b.const(d), y))

    def terms(self):
        full, full_t, _, _ = _ln_terms()
        x, g, b = t.var("x"), t.var("g"), t.var("b")
        ln0 = t.f("ln0", x)
        return [(full_t, full), (t.add(b, t.mul(g, ln0)), full)]


class FoldLayerNormIntoLinear(Rule):
    name = "fold-layernorm-into-linears"
    description = (
        "layer_norm(x, g, b) read only by linears -> layer_norm(x) with g, b folded into "
        "each linear (W*g, W b + c)"
    )
    kind = "numeric-only"
    why_numeric_only = (
        "scaling a linear's input features by g is a column scaling of W (broadcast mul "
        "over the weight), which the axioms do not relate to matmul"
    )
    root_ops = ("layer_norm",)

    def match_at(self, idx, node):
        y = node.outputs[0]
        if len(node.inputs) < 2 or len(node.attrs["normalized_shape"]) != 1 or y in idx.outputs:
            return
        if not all(idx.is_const(v) for v in node.inputs[1:]):
            return
        users = idx.users.get(y, [])
        if not users:
            return
        for u in users:
            if u.op != "linear" or u.inputs[0] != y or y in u.inputs[1:]:
                return
            if not all(idx.is_const(v) for v in u.inputs[1:]):
                return
        yield self._m([node, *users], ins=list(node.inputs), attrs=dict(node.attrs),
                      linears=[(list(u.inputs), u.outputs[0]) for u in users])  # fmt: skip

    def rewrite(self, e, m):
        x, g, *bias = m["ins"]
        ln = e.node("layer_norm", [x], m["attrs"])[0]
        for (_, w, *c), out in m["linears"]:
            ws = e.op("mul", w, g)
            bs = [e.op("linear", bias[0], w, *c)] if bias else c
            e.replace(out, e.op("linear", ln, ws, *bs))

    def example(self, b, variant):
        x = b.input(2, 3, 8) if variant == 0 else b.input(4, 6)
        d = b.graph.types[x].shape[-1]
        ins = [x, b.const(d, positive=True)] + ([b.const(d)] if variant == 0 else [])
        ln = b.op("layer_norm", *ins, normalized_shape=[d], eps=1e-5)
        y1 = b.op("linear", ln, b.const(5, d), b.const(5))
        y2 = b.op("linear", ln, b.const(7, d))
        return b.build(y1, y2)


class MaxPoolRelu(Rule):
    name = "maxpool-relu-swap"
    description = "max_pool2d(relu(x)) -> relu(max_pool2d(x)) (relu on the smaller tensor)"
    root_ops = ("max_pool2d",)
    inverse = "relu-maxpool-swap"

    def match_at(self, idx, node):
        r = idx.made_by(node.inputs[0], "relu")
        if r is not None and idx.sole_user(node.inputs[0], node):
            yield self._m([r, node], x=r.inputs[0], attrs=dict(node.attrs), out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], e.op("relu", e.node("max_pool2d", [m["x"]], m["attrs"])[0]))

    def example(self, b, variant):
        x = b.input(1, 3, 8, 8) if variant == 0 else b.input(2, 4, 9, 7)
        kw = (
            dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1])
            if variant == 0
            else dict(kernel=[2, 2], stride=[2, 1], padding=[0, 1])
        )
        return b.build(b.op("max_pool2d", b.op("relu", x), **kw))

    def terms(self):
        x, k = t.var("x"), t.ivar("k")
        return [(t.f("maxpool", k, t.relu(x)), t.relu(t.f("maxpool", k, x)))]


class ReluMaxPool(Rule):
    name = "relu-maxpool-swap"
    description = "relu(max_pool2d(x)) -> max_pool2d(relu(x))"
    root_ops = ("relu",)
    inverse = "maxpool-relu-swap"

    def match_at(self, idx, node):
        p = idx.made_by(node.inputs[0], "max_pool2d")
        if p is not None and idx.sole_user(node.inputs[0], node):
            yield self._m([p, node], x=p.inputs[0], attrs=dict(p.attrs), out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], e.node("max_pool2d", [e.op("relu", m["x"])], m["attrs"])[0])

    def example(self, b, variant):
        x = b.input(1, 3, 8, 8) if variant == 0 else b.input(2, 4, 9, 7)
        kw = (
            dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1])
            if variant == 0
            else dict(kernel=[2, 2], stride=[2, 1], padding=[0, 1])
        )
        return b.build(b.op("relu", b.op("max_pool2d", x, **kw)))

    def terms(self):
        x, k = t.var("x"), t.ivar("k")
        return [(t.relu(t.f("maxpool", k, x)), t.f("maxpool", k, t.relu(x)))]


RULES: list[Rule] = [
    ConstReassociate("add"),
    LayerNormDecompose(),
    LayerNormFuseAffine(),
    FoldLayerNormIntoLinear(),
    MaxPoolRelu(),
    ReluMaxPool(),
]
