"""Convolution rules: batch-norm folding, per-channel scale/shift folding, conv + relu,
merging parallel convs (after enlarging a 1x1 kernel), merging convs whose outputs add."""

from __future__ import annotations

import itertools

from tunelab.workers.graph_rewrite.rules import terms as t
from tunelab.workers.graph_rewrite.rules.core import Builder, Index, Match, Rule, other
from tunelab.workers.graph_rewrite.rules.linear import MAX_GROUP
from tunelab.workers.graphs.ir import Node

WHY_BN = (
    "batch_norm's arithmetic (w / sqrt(var + eps), shifts by the running mean) has no axioms "
    "in the uninterpreted operator theory"
)


def _cfg(n: Node) -> tuple:
    a = n.attrs
    return (tuple(a["stride"]), tuple(a["padding"]), tuple(a.get("dilation", (1, 1))),
            a.get("groups", 1))  # fmt: skip


def _const_conv(idx: Index, n: Node) -> bool:
    return n.op == "conv2d" and all(idx.is_const(v) for v in n.inputs[1:])


def _bias(n: Node) -> list[str]:
    return n.inputs[2:3]


def _conv(b: Builder, x: str, cout: int, k: int, *, bias: bool, stride: int = 1,
          padding: int | None = None, groups: int = 1) -> str:  # fmt: skip
    cin = b.graph.types[x].shape[1]
    ins = [x, b.const(cout, cin // groups, k, k)] + ([b.const(cout)] if bias else [])
    p = k // 2 if padding is None else padding
    return b.op("conv2d", *ins, stride=[stride, stride], padding=[p, p], dilation=[1, 1],
                groups=groups)  # fmt: skip


def _channel_vector(idx: Index, k: str, channels: int) -> int | None:
    """The number of channels (`channels` or 1) if constant `k` broadcasts over an NCHW
    tensor per channel, else None."""
    s = idx.shape(k)
    if len(s) > 4:
        return None
    s = (1,) * (4 - len(s)) + s
    if s[0] == 1 and s[2:] == (1, 1) and s[1] in (channels, 1):
        return s[1]
    return None


class FoldConvBatchNorm(Rule):
    name = "fold-conv-bn"
    description = "batch_norm(conv2d(x, W, b)) -> conv2d(x, W * s, (b - mean) * s + beta)"
    kind = "numeric-only"
    why_numeric_only = WHY_BN
    root_ops = ("batch_norm",)

    def match_at(self, idx, node):
        c = idx.made_by(node.inputs[0], "conv2d")
        if c is None or not _const_conv(idx, c) or not idx.sole_user(node.inputs[0], node):
            return
        if all(idx.is_const(v) for v in node.inputs[1:]):
            yield self._m([c, node], conv=list(c.inputs), attrs=dict(c.attrs),
                          bn=list(node.inputs[1:]), eps=node.attrs["eps"],
                          out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, w, *cb = m["conv"]
        g, beta, mean, var = m["bn"]
        scale = e.op("mul", g, e.op("rsqrt", e.op("add_scalar", var, value=m["eps"])))
        cout = e.graph.types[w].shape[0]
        w2 = e.op("mul", w, e.op("reshape", scale, shape=[cout, 1, 1, 1]))
        d = e.op("sub", cb[0], mean) if cb else e.op("neg", mean)
        b2 = e.op("add", e.op("mul", d, scale), beta)
        e.replace(m["out"], e.node("conv2d", [x, w2, b2], m["attrs"])[0])

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 8, 5, 7)
        c = _conv(b, x, 6, 3, bias=variant == 1, groups=1 if variant == 0 else 2)
        bn = [b.const(6), b.const(6), b.const(6), b.const(6, positive=True)]
        return b.build(b.op("batch_norm", c, *bn, eps=1e-5))


class BatchNormToAffine(Rule):
    name = "batch-norm-to-affine"
    description = "batch_norm(x) -> x * s + t, per-channel constants computed from the stats"
    kind = "numeric-only"
    why_numeric_only = WHY_BN
    root_ops = ("batch_norm",)

    def match_at(self, idx, node):
        if idx.rank(node.inputs[0]) >= 2 and all(idx.is_const(v) for v in node.inputs[1:]):
            yield self._m([node], x=node.inputs[0], bn=list(node.inputs[1:]),
                          eps=node.attrs["eps"], out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        g, beta, mean, var = m["bn"]
        shape = e.graph.types[m["x"]].shape
        vec = [shape[1]] + [1] * (len(shape) - 2)
        scale = e.op("mul", g, e.op("rsqrt", e.op("add_scalar", var, value=m["eps"])))
        shift = e.op("sub", beta, e.op("mul", mean, scale))
        y = e.op("mul", m["x"], e.op("reshape", scale, shape=vec))
        e.replace(m["out"], e.op("add", y, e.op("reshape", shift, shape=vec)))

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(3, 5)
        c = b.graph.types[x].shape[1]
        bn = [b.const(c), b.const(c), b.const(c), b.const(c, positive=True)]
        return b.build(b.op("batch_norm", x, *bn, eps=1e-3))


class FoldConvChannelOp(Rule):
    """mul/add of a conv2d's output by a per-channel constant, folded into W / the bias."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.root_ops = (op,)
        self.name = f"fold-conv-{op}"
        what = "W * k, b * k" if op == "mul" else "b + k"
        self.description = f"{op}(conv2d(x, W, b), k), k per output channel -> conv2d({what})"

    def match_at(self, idx, node):
        for cv in dict.fromkeys(node.inputs):
            c = idx.made_by(cv, "conv2d")
            k = other(node, cv)
            if c is None or k is None or not idx.is_const(k) or not _const_conv(idx, c):
                continue
            if not idx.sole_user(cv, node) or idx.shape(node.outputs[0]) != idx.shape(cv):
                continue
            n = _channel_vector(idx, k, idx.shape(cv)[1])
            if n is not None:
                yield self._m([c, node], conv=list(c.inputs), attrs=dict(c.attrs), k=k, n=n,
                              out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, w, *cb = m["conv"]
        n, cout = m["n"], e.graph.types[w].shape[0]
        kv = e.op("reshape", m["k"], shape=[n])
        if self.op == "mul":
            w = e.op("mul", w, e.op("reshape", m["k"], shape=[n, 1, 1, 1]))
            bias = [e.op("mul", cb[0], kv)] if cb else []
        elif cb:
            bias = [e.op("add", cb[0], kv)]
        else:
            bias = [kv if n == cout else e.op("expand", kv, shape=[cout])]
        e.replace(m["out"], e.node("conv2d", [x, w, *bias], m["attrs"])[0])

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 8, 5, 7)
        c = _conv(
            b, x, 6, 3, bias=variant == 0, groups=1 if variant == 0 else 2, stride=1 + variant
        )
        if variant == 0:
            return b.build(b.op(self.op, c, b.const(6, 1, 1)))
        return b.build(b.op(self.op, b.const(1, 6, 1, 1), c))

    def terms(self):
        c, x, w, bb, v = t.ivar("c"), t.var("x"), t.var("W"), t.var("b"), t.var("v")
        ch = t.f("chan", v)
        if self.op == "mul":
            w2 = t.f("chscale", w, v)
            return [
                (t.mul(t.conv(c, x, w, bb), ch), t.conv(c, x, w2, t.mul(bb, v))),
                (t.mul(ch, t.conv(c, x, w)), t.conv(c, x, w2)),
            ]
        return [
            (t.add(t.conv(c, x, w, bb), ch), t.conv(c, x, w, t.add(bb, v))),
            (t.add(ch, t.conv(c, x, w)), t.conv(c, x, w, v)),
        ]


class UnfoldConvBias(Rule):
    name = "unfold-conv-bias"
    description = "conv2d(x, W, b) -> conv2d(x, W) + b (per channel)"
    root_ops = ("conv2d",)
    inverse = "fold-conv-add"

    def match_at(self, idx, node):
        if len(node.inputs) > 2:
            yield self._m([node], ins=list(node.inputs), attrs=dict(node.attrs),
                          out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, w, bias = m["ins"]
        y = e.node("conv2d", [x, w], m["attrs"])[0]
        cout = e.graph.types[w].shape[0]
        e.replace(m["out"], e.op("add", y, e.op("reshape", bias, shape=[cout, 1, 1])))

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 8, 5, 7)
        return b.build(_conv(b, x, 6, 3 - variant, bias=True, groups=1 + variant,
                             stride=1 + variant))  # fmt: skip

    def terms(self):
        c, x, w, bb = t.ivar("c"), t.var("x"), t.var("W"), t.var("b")
        return [(t.conv(c, x, w, bb), t.add(t.conv(c, x, w), t.f("chan", bb)))]


class GroupConvToDense(Rule):
    name = "group-conv-to-dense"
    description = (
        "a grouped conv2d -> a dense conv2d (groups 1) over the block-diagonal weight, "
        "built from W by pad/reshape (folded)"
    )
    kind = "numeric-only"
    why_numeric_only = (
        "the block-diagonal weight is built by index arithmetic (pad, flatten, slice, "
        "reshape), which the uninterpreted operator theory does not model"
    )
    root_ops = ("conv2d",)

    def match_at(self, idx, node):
        if node.attrs.get("groups", 1) > 1 and _const_conv(idx, node):
            yield self._m([node], ins=list(node.inputs), attrs=dict(node.attrs),
                          out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, w, *cb = m["ins"]
        g = m["attrs"]["groups"]
        cout, cin_g, kh, kw = e.graph.types[w].shape
        block = (cout // g) * cin_g * kh * kw
        # [g, Y] padded to [g, (g+1) Y] and read as [g, g, Y]: zeros off the diagonal
        flat = e.op("reshape", e.op("pad", e.op("reshape", w, shape=[g, block]),
                                    pad=[0, g * block]), shape=[g * (g + 1) * block])  # fmt: skip
        diag = e.op("reshape", e.op("slice", flat, dim=0, start=0, end=g * g * block, step=1),
                    shape=[g, g, cout // g, cin_g, kh, kw])  # fmt: skip
        dense = e.op("reshape", e.op("permute", diag, dims=[0, 2, 1, 3, 4, 5]),
                     shape=[cout, g * cin_g, kh, kw])  # fmt: skip
        attrs = {**m["attrs"], "groups": 1}
        e.replace(m["out"], e.node("conv2d", [x, dense, *cb], attrs)[0])

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 6, 7, 5)
        if variant == 0:
            return b.build(_conv(b, x, 8, 3, bias=False, groups=4))
        return b.build(_conv(b, x, 9, 1, bias=True, groups=3, stride=2))


class AvgPoolToMean(Rule):
    name = "avgpool-to-mean"
    description = (
        "adaptive_avg_pool2d(x, 1) (and a flatten of it) -> mean(x, dims 2, 3) (keepdim "
        "unless the flatten is absorbed)"
    )
    kind = "numeric-only"
    why_numeric_only = "pooling to 1x1 equals a mean by window arithmetic, not an axiom"
    root_ops = ("adaptive_avg_pool2d",)

    def match_at(self, idx, node):
        x, y = node.inputs[0], node.outputs[0]
        if list(node.attrs["size"]) != [1, 1] or idx.rank(x) != 4:
            return
        users = idx.users.get(y, [])
        flat = users[0] if len(users) == 1 else None
        if (flat is not None and flat.op == "reshape" and idx.sole_user(y, flat)
                and idx.shape(flat.outputs[0]) == idx.shape(x)[:2]):  # fmt: skip
            yield self._m([node, flat], x=x, keepdim=False, out=flat.outputs[0])
        else:
            yield self._m([node], x=x, keepdim=True, out=y)

    def rewrite(self, e, m):
        e.replace(m["out"], e.op("mean", m["x"], dims=[2, 3], keepdim=m["keepdim"]))

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 3, 5, 7)
        p = b.op("adaptive_avg_pool2d", x, size=[1, 1])
        if variant == 0:
            return b.build(b.op("reshape", p, shape=[1, 4]))
        return b.build(p)


class ConvReluFuse(Rule):
    name = "conv-relu-fuse"
    description = "relu(conv2d(x, W, b)) -> conv2d_relu(x, W, b)"
    root_ops = ("relu",)
    inverse = "conv-relu-unfuse"

    def match_at(self, idx, node):
        c = idx.made_by(node.inputs[0], "conv2d")
        if c is not None and idx.sole_user(node.inputs[0], node):
            yield self._m([c, node], ins=list(c.inputs), attrs=dict(c.attrs), out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], e.node("conv2d_relu", m["ins"], m["attrs"])[0])

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 8, 5, 7)
        return b.build(b.op("relu", _conv(b, x, 8, 3 - 2 * variant, bias=variant == 0,
                                          groups=1 + variant, stride=1 + variant)))  # fmt: skip

    def terms(self):
        c, x, w, bb = t.ivar("c"), t.var("x"), t.var("W"), t.var("b")
        return [(t.relu(t.conv(c, x, w, bb)), t.f("conv_relu", c, x, w, bb)),
                (t.relu(t.conv(c, x, w)), t.f("conv_relu0", c, x, w))]  # fmt: skip


class ConvReluUnfuse(Rule):
    name = "conv-relu-unfuse"
    description = "conv2d_relu(x, W, b) -> relu(conv2d(x, W, b))"
    root_ops = ("conv2d_relu",)
    inverse = "conv-relu-fuse"

    def match_at(self, idx, node):
        yield self._m([node], ins=list(node.inputs), attrs=dict(node.attrs), out=node.outputs[0])

    def rewrite(self, e, m):
        e.replace(m["out"], e.op("relu", e.node("conv2d", m["ins"], m["attrs"])[0]))

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 8, 5, 7)
        cin = b.graph.types[x].shape[1]
        ins = [x, b.const(8, cin, 3, 3)] + ([b.const(8)] if variant == 0 else [])
        y = b.op("conv2d_relu", *ins, stride=[1 + variant, 1], padding=[1, variant],
                 dilation=[1, 1], groups=1)  # fmt: skip
        return b.build(y)

    def terms(self):
        return [(tgt, src) for src, tgt in ConvReluFuse().terms()]


def _merge_terms() -> list[tuple[t.Term, t.Term]]:
    c, x, w1, w2, b1, b2 = t.ivar("c"), *(t.var(n) for n in ("x", "W1", "W2", "b1", "b2"))
    y = t.conv(c, x, t.concat(0, w1, w2), t.concat(-1, b1, b2))
    y0 = t.conv(c, x, t.concat(0, w1, w2))
    sources = [t.conv(c, x, w1, b1), t.conv(c, x, w2, b2), t.conv(c, x, w1), t.conv(c, x, w2)]
    return list(zip(sources, [*t.split(1, y, 2), *t.split(1, y0, 2)], strict=True))


class MergeParallelConvs(Rule):
    name = "merge-parallel-convs"
    description = (
        "two conv2d reading the same input, same kernel size, stride, padding (groups 1) -> "
        "split(conv2d(x, concat(W1, W2), concat(b1, b2)))"
    )
    root_ops = ("conv2d",)
    inverse = "unmerge-conv"

    def match(self, graph, index=None) -> list[Match]:
        idx = index if index is not None else Index(graph)
        found = []
        for x, users in idx.users.items():
            groups: dict[tuple, list[Node]] = {}
            for n in users:
                if (n.inputs[0] == x and _const_conv(idx, n) and x not in n.inputs[1:]
                        and n.attrs.get("groups", 1) == 1):  # fmt: skip
                    key = (_cfg(n), idx.shape(n.inputs[1])[2:], len(n.inputs))
                    groups.setdefault(key, []).append(n)
            for group in groups.values():
                if len(group) <= MAX_GROUP:
                    pairs = itertools.combinations(group, 2)
                else:
                    pairs = itertools.pairwise(group)  # type: ignore[assignment]
                for a, c in pairs:
                    found.append(self._m([a, c], x=x, ins=[list(a.inputs), list(c.inputs)],
                                         attrs=dict(a.attrs),
                                         outs=[a.outputs[0], c.outputs[0]]))  # fmt: skip
        found.sort(key=lambda m: idx.key(m.location))
        return found

    def rewrite(self, e, m):
        (x, w1, *b1), (_, w2, *b2) = m["ins"]
        sizes = [e.graph.types[w].shape[0] for w in (w1, w2)]
        bias = [e.op("concat", b1[0], b2[0], dim=0)] if b1 else []
        y = e.node("conv2d", [x, e.op("concat", w1, w2, dim=0), *bias], m["attrs"])[0]
        for old, new in zip(m["outs"], e.node("split", [y], {"dim": 1, "sizes": sizes}, 2),
                            strict=True):  # fmt: skip
            e.replace(old, new)

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 3, 7, 5)
        k, s = (1, 1) if variant == 0 else (3, 2)
        y1 = _conv(b, x, 5, k, bias=variant == 1, stride=s)
        y2 = _conv(b, x, 3, k, bias=variant == 1, stride=s)
        return b.build(y1, b.op("relu", y2))

    def terms(self):
        return _merge_terms()


class UnmergeConv(Rule):
    name = "unmerge-conv"
    description = "split(conv2d(x, W, b)) on channels -> one conv2d per part"
    root_ops = ("split",)
    inverse = "merge-parallel-convs"

    def match_at(self, idx, node):
        y = node.inputs[0]
        c = idx.made_by(y, "conv2d")
        if c is None or not _const_conv(idx, c) or not idx.sole_user(y, node):
            return
        if c.attrs.get("groups", 1) == 1 and node.attrs["dim"] in (1, -3):
            yield self._m([c, node], ins=list(c.inputs), attrs=dict(c.attrs),
                          sizes=list(node.attrs["sizes"]), outs=list(node.outputs))  # fmt: skip

    def rewrite(self, e, m):
        x, w, *cb = m["ins"]
        n = len(m["outs"])
        ws = e.node("split", [w], {"dim": 0, "sizes": m["sizes"]}, n)
        bs = e.node("split", cb, {"dim": 0, "sizes": m["sizes"]}, n) if cb else []
        for k, old in enumerate(m["outs"]):
            e.replace(old, e.node("conv2d", [x, ws[k], *bs[k : k + 1]], m["attrs"])[0])

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 3, 7, 5)
        sizes = [2, 4] if variant == 0 else [1, 2, 3]
        y = _conv(b, x, sum(sizes), 3, bias=variant == 0, stride=1 + variant)
        return b.build(*b.nodes("split", y, outputs=len(sizes), dim=1, sizes=sizes))

    def terms(self):
        c, x, w, bb = t.ivar("c"), t.var("x"), t.var("W"), t.var("b")
        ws, bs = t.split(0, w, 2), t.split(-1, bb, 2)
        pairs = []
        for k in range(2):
            pairs.append((t.split(1, t.conv(c, x, w, bb), 2)[k], t.conv(c, x, ws[k], bs[k])))
            pairs.append((t.split(1, t.conv(c, x, w), 2)[k], t.conv(c, x, ws[k])))
        return pairs


class EnlargeConvKernel(Rule):
    name = "enlarge-conv-kernel"
    description = (
        "a 1x1 conv2d whose input another conv2d with the same stride reads -> a 3x3 conv2d "
        "(zero-padded weight, padding 1), so the two can merge"
    )
    root_ops = ("conv2d",)

    def match_at(self, idx, node):
        x, w = node.inputs[:2]
        stride, padding, dilation, _ = _cfg(node)
        if idx.shape(w)[2:] != (1, 1) or padding != (0, 0) or dilation != (1, 1):
            return
        if not _const_conv(idx, node):
            return
        if any(u is not node and u.op == "conv2d" and u.inputs[0] == x and _cfg(u)[0] == stride
               for u in idx.users.get(x, ())):  # fmt: skip
            yield self._m([node], ins=list(node.inputs), attrs=dict(node.attrs),
                          out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        x, w, *cb = m["ins"]
        attrs = {**m["attrs"], "padding": [1, 1]}
        w3 = e.op("pad", w, pad=[1, 1, 1, 1])
        e.replace(m["out"], e.node("conv2d", [x, w3, *cb], attrs)[0])

    def example(self, b, variant):
        x = b.input(1, 4, 6, 6) if variant == 0 else b.input(2, 4, 7, 5)
        s = 1 + variant
        y1 = _conv(b, x, 6, 1, bias=variant == 0, stride=s, groups=1 + variant)
        y2 = _conv(b, x, 3, 3, bias=True, stride=s)
        return b.build(y1, y2)

    def terms(self):
        c, x, w, bb = t.ivar("c"), t.var("x"), t.var("W"), t.var("b")
        big = t.f("enl", c)
        return [(t.conv(c, x, w, bb), t.conv(big, x, t.f("zpad", w), bb)),
                (t.conv(c, x, w), t.conv(big, x, t.f("zpad", w)))]  # fmt: skip


class MergeConvAdd(Rule):
    name = "merge-conv-add"
    description = (
        "conv2d(a, W1, b1) + conv2d(c, W2, b2) (same kernel size, stride, padding) -> "
        "conv2d(concat(a, c), concat(W1, W2 on input channels), b1 + b2)"
    )
    root_ops = ("add",)

    def match_at(self, idx, node):
        a, c = node.inputs
        ca, cc = idx.made_by(a, "conv2d"), idx.made_by(c, "conv2d")
        if (
            ca is None
            or cc is None
            or a == c
            or not (_const_conv(idx, ca) and _const_conv(idx, cc))
        ):
            return
        if not (idx.sole_user(a, node) and idx.sole_user(c, node)) or _cfg(ca) != _cfg(cc):
            return
        if ca.attrs.get("groups", 1) != 1 or idx.shape(a) != idx.shape(c):
            return
        xa, xc = ca.inputs[0], cc.inputs[0]
        sa, sc = idx.shape(xa), idx.shape(xc)
        if sa[0] != sc[0] or sa[2:] != sc[2:] or idx.shape(ca.inputs[1])[2:] != idx.shape(
            cc.inputs[1])[2:]:  # fmt: skip
            return
        yield self._m([ca, cc, node], ins=[list(ca.inputs), list(cc.inputs)],
                      attrs=dict(ca.attrs), out=node.outputs[0])  # fmt: skip

    def rewrite(self, e, m):
        (xa, wa, *ba), (xc, wc, *bc) = m["ins"]
        bias = [e.op("add", ba[0], bc[0])] if ba and bc else [*ba, *bc]
        x = e.op("concat", xa, xc, dim=1)
        w = e.op("concat", wa, wc, dim=1)
        e.replace(m["out"], e.node("conv2d", [x, w, *bias], m["attrs"])[0])

    def example(self, b, variant):
        if variant == 0:
            xa, xc = b.input(1, 4, 6, 6), b.input(1, 2, 6, 6)
            y = b.op("add", _conv(b, xa, 5, 1, bias=False), _conv(b, xc, 5, 1, bias=True))
        else:
            xa, xc = b.input(2, 3, 7, 5), b.input(2, 3, 7, 5)
            y = b.op("add", _conv(b, xa, 4, 3, bias=True, stride=2),
                     _conv(b, xc, 4, 3, bias=True, stride=2))  # fmt: skip
        return b.build(y)

    def terms(self):
        c, xa, xc, wa, wc, ba, bc = t.ivar("c"), *(
            t.var(n) for n in ("xa", "xc", "Wa", "Wc", "ba", "bc"))  # fmt: skip
        x, w = t.concat(1, xa, xc), t.concat(1, wa, wc)
        return [
            (t.add(t.conv(c, xa, wa, ba), t.conv(c, xc, wc, bc)), t.conv(c, x, w, t.add(ba, bc))),
            (t.add(t.conv(c, xa, wa), t.conv(c, xc, wc, bc)), t.conv(c, x, w, bc)),
            (t.add(t.conv(c, xa, wa), t.conv(c, xc, wc)), t.conv(c, x, w)),
        ]


RULES: list[Rule] = [
    FoldConvBatchNorm(),
    BatchNormToAffine(),
    FoldConvChannelOp("mul"),
    FoldConvChannelOp("add"),
    UnfoldConvBias(),
    GroupConvToDense(),
    AvgPoolToMean(),
    ConvReluFuse(),
    ConvReluUnfuse(),
    MergeParallelConvs(),
    UnmergeConv(),
    EnlargeConvKernel(),
    MergeConvAdd(),
]
