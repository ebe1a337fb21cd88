"""The operators of the IR: one PyTorch implementation each, used to execute a graph,
to infer the types of a new node (on the `meta` device) and to time one operator for
the cost model.

An operator takes a list of tensors and a JSON dict of attributes and returns a list of
tensors. `OPS` is the whole vocabulary; `OP_NAMES` fixes its order (the one-hot feature
index of an op in the agent's observation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tunelab.workers.graphs.ir import Graph, GraphError, Node, TensorType

if TYPE_CHECKING:
    import torch

OpFn = Callable[[Sequence["torch.Tensor"], dict[str, Any]], "list[torch.Tensor]"]


def _t():
    import torch

    return torch


def _f():
    import torch.nn.functional as F

    return F


def _linear(xs, a):
    return [_f().linear(xs[0], xs[1], xs[2] if len(xs) > 2 else None)]


def _conv2d(xs, a):
    return [
        _f().conv2d(
            xs[0],
            xs[1],
            xs[2] if len(xs) > 2 else None,
            tuple(a["stride"]),
            tuple(a["padding"]),
            tuple(a.get("dilation", (1, 1))),
            a.get("groups", 1),
        )
    ]


def _conv2d_relu(xs, a):
    return [_conv2d(xs, a)[0].relu_()]


def _batch_norm(xs, a):
    x, w, b, mean, var = xs
    return [_f().batch_norm(x, mean, var, w, b, False, 0.0, a["eps"])]


def _layer_norm(xs, a):
    w = xs[1] if len(xs) > 1 else None
    b = xs[2] if len(xs) > 2 else None
    return [_f().layer_norm(xs[0], tuple(a["normalized_shape"]), w, b, a["eps"])]


def _split(xs, a):
    return list(_t().split(xs[0], list(a["sizes"]), dim=a["dim"]))


def _slice(xs, a):
    dim, start, end, step = a["dim"], a["start"], a["end"], a.get("step", 1)
    idx = [slice(None)] * xs[0].dim()
    idx[dim] = slice(start, end, step)
    return [xs[0][tuple(idx)]]


def _embedding(xs, a):
    return [_f().embedding(xs[1], xs[0])]  # inputs: (weight, indices) as aten orders them


OPS: dict[str, OpFn] = {
    # linear algebra
    "matmul": lambda xs, a: [_t().matmul(xs[0], xs[1])],
    "linear": _linear,
    "conv2d": _conv2d,
    "conv2d_relu": _conv2d_relu,  # conv2d then relu in place (graph-rewrite conv-relu-fuse)
    # element-wise, binary (broadcasting)
    "add": lambda xs, a: [xs[0] + xs[1]],
    "sub": lambda xs, a: [xs[0] - xs[1]],
    "mul": lambda xs, a: [xs[0] * xs[1]],
    "div": lambda xs, a: [xs[0] / xs[1]],
    # element-wise with a scalar
    "add_scalar": lambda xs, a: [xs[0] + a["value"]],
    "mul_scalar": lambda xs, a: [xs[0] * a["value"]],
    "div_scalar": lambda xs, a: [xs[0] / a["value"]],
    "pow_scalar": lambda xs, a: [xs[0] ** a["value"]],
    # activations, unary
    "relu": lambda xs, a: [_t().relu(xs[0])],
    "gelu": lambda xs, a: [_f().gelu(xs[0], approximate=a.get("approximate", "none"))],
    "tanh": lambda xs, a: [_t().tanh(xs[0])],
    "sigmoid": lambda xs, a: [_t().sigmoid(xs[0])],
    "sqrt": lambda xs, a: [_t().sqrt(xs[0])],
    "rsqrt": lambda xs, a: [_t().rsqrt(xs[0])],
    "erf": lambda xs, a: [_t().erf(xs[0])],
    "neg": lambda xs, a: [-xs[0]],
    "identity": lambda xs, a: [xs[0]],
    # normalisation, reductions
    "softmax": lambda xs, a: [_t().softmax(xs[0], dim=a["dim"])],
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "mean": lambda xs, a: [xs[0].mean(dim=tuple(a["dims"]), keepdim=a.get("keepdim", False))],
    "sum": lambda xs, a: [xs[0].sum(dim=tuple(a["dims"]), keepdim=a.get("keepdim", False))],
    # pooling
    "max_pool2d": lambda xs, a: [
        _f().max_pool2d(xs[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]))
    ],
    "avg_pool2d": lambda xs, a: [
        _f().avg_pool2d(xs[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]))
    ],
    "adaptive_avg_pool2d": lambda xs, a: [_f().adaptive_avg_pool2d(xs[0], tuple(a["size"]))],
    # layout
    "transpose": lambda xs, a: [xs[0].transpose(a["dim0"], a["dim1"])],
    "permute": lambda xs, a: [xs[0].permute(*a["dims"])],
    "reshape": lambda xs, a: [xs[0].reshape(tuple(a["shape"]))],
    "expand": lambda xs, a: [xs[0].expand(tuple(a["shape"]))],
    "concat": lambda xs, a: [_t().cat(list(xs), dim=a["dim"])],
    "split": _split,
    "slice": _slice,
    "embedding": _embedding,
    "pad": lambda xs, a: [_f().pad(xs[0], tuple(a["pad"]))],
}

OP_NAMES: tuple[str, ...] = tuple(sorted(OPS))


def run_node(node: Node, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Apply one node to tensors."""
    try:
        fn = OPS[node.op]
    except KeyError:
        raise GraphError(f"unknown operator {node.op!r} (node {node.name})") from None
    out = fn(inputs, node.attrs)
    if len(out) != len(node.outputs):
        raise GraphError(
            f"node {node.name} ({node.op}) gives {len(out)} outputs, the graph names "
            f"{len(node.outputs)}"
        )
    return out


def infer_types(node: Node, types: Sequence[TensorType]) -> list[TensorType]:
    """The output types of `node` applied to inputs of `types` (run on the meta device);
    GraphError if the op rejects them."""
    torch = _t()
    args = [torch.empty(t.shape, dtype=getattr(torch, t.dtype), device="meta") for t in types]
    try:
        out = run_node(node, args)
    except GraphError:
        raise
    except Exception as exc:  # torch's shape checks: the node does not type-check
        raise GraphError(f"node {node.name} ({node.op}) does not type-check: {exc}") from None
    return [TensorType(tuple(o.shape), str(o.dtype).removeprefix("torch.")) for o in out]


def retype(graph: Graph) -> None:
    """Recompute the type of every node output in `graph` (after a rewrite)."""
    for n in graph.nodes:
        outs = infer_types(n, [graph.types[v] for v in n.inputs])
        for v, t in zip(n.outputs, outs, strict=True):
            graph.types[v] = t
