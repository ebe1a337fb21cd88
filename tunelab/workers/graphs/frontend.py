"""Import a PyTorch model into the graph IR through `torch.export`.

The model is exported (non-strict) to ATen's training IR, which keeps the high-level
operators (`linear`, `conv2d`, `layer_norm`, `batch_norm`, `softmax`, ...); each is mapped
to one IR operator. Only where the export holds an operator with no mapping is the
program decomposed further (`run_decompositions`, keeping the operators mapped here).

What does not depend on the user's inputs is handled at import: values computed from no
tensor at all (`arange`, `zeros`: attention masks, position ids) and values the IR cannot
express computed from weights only (`gather` over a buffer) are evaluated once and become
constants. Operators on weights that the IR can express stay nodes (constant nodes, folded
by the executor), so weight preparation stays visible to rewrites. No-op operators
(dropout in eval, clone, contiguous, same-dtype casts, assertions) are dropped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from tunelab.workers.graphs.ir import Graph, GraphError, Node, TensorType
from tunelab.workers.graphs.ops import infer_types

aten = torch.ops.aten


class FrontendError(ValueError):
    """A model that cannot be imported into the graph IR (and why)."""


@dataclass
class Imported:
    """An imported model: its graph, the values of the graph's constants (weights) and
    example inputs, in `graph.inputs` order."""

    graph: Graph
    constants: dict[str, torch.Tensor]
    inputs: list[torch.Tensor]


def import_model(ref: str, size: str = "cpu", seed: int = 0) -> Imported:
    """Build a model with `models.load(ref, size, seed)` and import it."""
    from tunelab.workers.graphs import models

    model, inputs = models.load(ref, size, seed)
    return import_module(model, inputs, name=ref)


def import_module(model: torch.nn.Module, example_inputs: tuple, name: str = "") -> Imported:
    """Export `model` (in eval mode, without gradients) on `example_inputs` and map it to
    the IR. FrontendError if it cannot be exported or holds an operator the IR lacks."""
    name = name or type(model).__name__
    inputs = tuple(example_inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise FrontendError(
                f"model {name!r}: example input {i} is a {type(x).__name__}, not a tensor"
            )
    model.eval()
    with torch.no_grad():
        try:
            ep = torch.export.export(model, inputs, strict=False)
        except Exception as exc:
            raise FrontendError(
                f"model {name!r}: torch.export cannot trace it: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from exc
        _check_static_shapes(ep, name)
        unknown = _unknown_ops(ep)
        if unknown:
            # Decompose all but the operators mapped here, then look again.
            table = torch.export.default_decompositions()
            for op in _HANDLERS:
                table.pop(op, None)
            try:
                decomposed = ep.run_decompositions(table)
            except Exception:
                decomposed = None
            if decomposed is None or _unknown_ops(decomposed):
                ops = ", ".join(sorted(unknown))
                plural = "s" if len(unknown) > 1 else ""
                verb = "are" if len(unknown) > 1 else "is"
                raise FrontendError(
                    f"model {name!r}: operator{plural} {ops} {verb} not supported by the graph "
                    f"IR (supported: {', '.join(supported_operators())})"
                )
            ep = decomposed
        return _Converter(ep, inputs, name).run()


def supported_operators() -> list[str]:
    """The ATen operators the importer maps (short names, sorted)."""
    return sorted({op._schema.name.removeprefix("aten::") for op in _HANDLERS})


def _op_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    module = getattr(target, "__module__", None) or ""
    return f"{module.lstrip('_')}.{getattr(target, '__name__', target)}".lstrip(".")


def _check_static_shapes(ep: torch.export.ExportedProgram, name: str) -> None:
    """FrontendError at the first value whose shape depends on the data (boolean masks,
    `nonzero`, `item()`...): the IR's types are static."""
    for n in ep.graph.nodes:
        val = n.meta.get("val")
        for v in val if isinstance(val, tuple | list) else [val]:
            if isinstance(v, torch.Tensor):
                dynamic = not all(isinstance(d, int) for d in v.shape)
            else:
                dynamic = isinstance(v, torch.SymInt | torch.SymFloat | torch.SymBool)
            if dynamic:
                what = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"value {v}"
                raise FrontendError(
                    f"model {name!r}: node {n.name} ({_op_name(n.target)}) has a data-dependent "
                    f"{what}; the graph IR needs static shapes"
                )


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return "(no message)"


def _input_nodes(node: fx.Node) -> list[fx.Node]:
    return list(node.all_input_nodes)


def _static_nodes(ep: torch.export.ExportedProgram) -> tuple[set[fx.Node], set[fx.Node]]:
    """The nodes that do not depend on user inputs, and among them those that depend on
    no placeholder at all (computed from nothing: `arange`, `zeros`, ...)."""
    user = set(ep.graph_signature.user_inputs)
    static: set[fx.Node] = set()
    pure: set[fx.Node] = set()
    for n in ep.graph.nodes:
        if n.op == "placeholder":
            if n.name not in user:
                static.add(n)
        elif n.op == "call_function":
            ins = _input_nodes(n)
            if all(i in static for i in ins):
                static.add(n)
                if all(i in pure for i in ins):
                    pure.add(n)
    return static, pure


def _unknown_ops(ep: torch.export.ExportedProgram) -> set[str]:
    """The operators with no mapping that must be mapped (they depend on user inputs)."""
    static, _ = _static_nodes(ep)
    return {
        _op_name(n.target)
        for n in ep.graph.nodes
        if n.op == "call_function"
        and n not in static
        and n.target is not operator.getitem
        and n.target not in _HANDLERS
    }


class _Unsupported(Exception):
    """This use of a known operator has no IR mapping (e.g. a transposed convolution)."""


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _norm_dim(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def _pair(v: Any) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = [int(x) for x in v]
    return v * 2 if len(v) == 1 else v


def _scalar(v: Any) -> int | float | bool:
    if isinstance(v, bool | int | float):
        return v
    raise _Unsupported(f"a non-constant scalar operand ({type(v).__name__})")


class _Converter:
    """Maps one exported program's graph to an IR graph."""

    def __init__(self, ep: torch.export.ExportedProgram, inputs: tuple, name: str) -> None:
        self.ep = ep
        self.example = inputs
        self.name = name
        self.static, self.pure = _static_nodes(ep)
        self.fold: set[fx.Node] = set()  # nodes evaluated at import, become constants
        self.env: dict[fx.Node, Any] = {}  # node -> IR value name (a list for tuples)
        self.real: dict[fx.Node, Any] = {}  # node -> real value (static nodes, on demand)
        self.used: set[str] = set()
        self.inputs: list[str] = []
        self.constants: dict[str, torch.Tensor] = {}
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = {}

    # -- helpers ------------------------------------------------------------------------

    def error(self, msg: str) -> FrontendError:
        return FrontendError(f"model {self.name!r}: {msg}")

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def type_of(self, val: Any, where: fx.Node) -> TensorType:
        if not isinstance(val, torch.Tensor):
            raise self.error(
                f"node {where.name} ({_op_name(where.target)}) gives a {type(val).__name__}, "
                "not a tensor"
            )
        shape = tuple(val.shape)
        if not all(isinstance(d, int) for d in shape):
            raise self.error(
                f"node {where.name} ({_op_name(where.target)}) has a data-dependent shape {shape}: "
                "the graph IR needs static shapes"
            )
        return TensorType(shape, _dtype(val.dtype))

    def add_constant(self, base: str, value: torch.Tensor) -> str:
        name = self.fresh(base)
        self.constants[name] = value.detach()
        self.types[name] = TensorType(tuple(value.shape), _dtype(value.dtype))
        return name

    def val(self, arg: Any) -> str:
        """The IR value of an fx argument (a node), materialising folded ones."""
        if not isinstance(arg, fx.Node):
            raise _Unsupported(f"a constant tensor argument {arg!r}")
        if arg in self.fold and arg not in self.env:
            self.env[arg] = self.add_constant(f"{arg.name}_folded", self.evaluate(arg))
        value = self.env.get(arg)
        if not isinstance(value, str):
            raise _Unsupported(f"the value of node {arg.name} ({arg.target})")
        return value

    def shape(self, arg: fx.Node) -> tuple[int, ...]:
        return tuple(arg.meta["val"].shape)

    def evaluate(self, n: fx.Node) -> Any:
        """The real value of a node that does not depend on user inputs."""
        if n in self.real:
            return self.real[n]
        if n.op == "placeholder":
            raise AssertionError(n.name)  # placeholders are all in `real` from the start
        for i in _input_nodes(n):
            if i not in self.real:
                self.evaluate(i)
        args = fx.node.map_arg(n.args, lambda a: self.real[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self.real[a])
        self.real[n] = n.target(*args, **kwargs)
        return self.real[n]

    def emit(
        self,
        n: fx.Node,
        op: str,
        inputs: list[str],
        attrs: dict[str, Any] | None = None,
        *,
        outputs: int | None = None,
    ) -> list[str]:
        """Add the IR node for fx node `n`: its outputs are `n`'s (the first `outputs` of a
        tuple-valued node), typed from the export."""
        val = n.meta["val"]
        vals = list(val) if isinstance(val, tuple | list) else [val]
        if outputs is not None:
            vals = vals[:outputs]
        # fx node names are unique and reserved in `used`: a single output keeps its name
        names = (
            [n.name] if len(vals) == 1 else [self.fresh(f"{n.name}_{i}") for i in range(len(vals))]
        )
        for v, t in zip(names, vals, strict=True):
            self.types[v] = self.type_of(t, n)
        self.nodes.append(Node(n.name, op, inputs, names, attrs or {}))
        if isinstance(val, tuple | list):
            self.env[n] = names + [None] * (len(val) - len(names))
        else:
            self.env[n] = names[0]
        return names

    def tmp(self, base: str, op: str, inputs: list[str], attrs: dict[str, Any]) -> str:
        """Add an IR node of one output that no fx node has (typed by inference)."""
        return self.tmp_multi(base, op, inputs, attrs, 1)[0]

    def tmp_multi(
        self, base: str, op: str, inputs: list[str], attrs: dict[str, Any], count: int
    ) -> list[str]:
        """Add an IR node of `count` outputs that no fx node has (typed by inference)."""
        outs = [self.fresh(base if count == 1 else f"{base}_{i}") for i in range(count)]
        node = Node(outs[0] if count == 1 else self.fresh(base), op, inputs, outs, attrs)
        try:
            types = infer_types(node, [self.types[v] for v in inputs])
        except GraphError as exc:
            raise _Unsupported(str(exc)) from None
        self.types.update(zip(outs, types, strict=True))
        self.nodes.append(node)
        return outs

    def alias(self, n: fx.Node, value: str) -> None:
        self.env[n] = value

    # -- the conversion -----------------------------------------------------------------

    def run(self) -> Imported:
        sig = self.ep.graph_signature
        for spec in sig.output_specs:
            if spec.kind.name != "USER_OUTPUT":
                target = f" {spec.target}" if spec.target else ""
                raise self.error(
                    f"the model updates its state ({spec.kind.name.lower()}{target}); "
                    "only pure inference graphs can be imported"
                )
        user_inputs = list(sig.user_inputs)
        if len(user_inputs) != len(self.example):
            raise self.error(
                f"{len(user_inputs)} graph inputs for {len(self.example)} example inputs"
            )
        example = dict(zip(user_inputs, self.example, strict=True))
        state = {spec.arg.name: spec for spec in sig.input_specs}
        for n in self.ep.graph.nodes:
            self.used.add(n.name)
        example_in: list[torch.Tensor] = []

        for n in self.ep.graph.nodes:
            if n.op == "placeholder":
                if n.name in example:
                    self.inputs.append(n.name)
                    self.types[n.name] = self.type_of(n.meta["val"], n)
                    self.env[n] = n.name
                    example_in.append(example[n.name])
                    continue
                value = self.state_value(state[n.name])
                self.real[n] = value
                self.constants[n.name] = value.detach()
                self.types[n.name] = TensorType(tuple(value.shape), _dtype(value.dtype))
                self.env[n] = n.name
            elif n.op == "call_function":
                self.convert(n)
            elif n.op == "output":
                outputs = [self.output(a) for a in n.args[0]]
            else:
                raise self.error(f"unexpected {n.op} node {n.name} in the exported graph")

        graph = Graph(self.inputs, list(self.constants), self.nodes, outputs, self.types, self.name)
        graph.prune()
        try:
            graph.validate()
        except GraphError as exc:
            raise self.error(f"the imported graph is invalid: {exc}") from exc
        self.check_types(graph)
        constants = {c: self.constants[c] for c in graph.constants}
        return Imported(graph, constants, [x.detach() for x in example_in])

    def state_value(self, spec: Any) -> torch.Tensor:
        kind = spec.kind.name
        if kind in ("PARAMETER", "BUFFER"):
            if spec.target in self.ep.state_dict:
                value = self.ep.state_dict[spec.target]
            else:  # a non-persistent buffer
                value = self.ep.constants[spec.target]
        elif kind == "CONSTANT_TENSOR":
            value = self.ep.constants[spec.target]
        else:
            raise self.error(f"input {spec.arg.name} of kind {kind} is not supported")
        if not isinstance(value, torch.Tensor):
            raise self.error(f"input {spec.arg.name} ({spec.target}) is not a tensor")
        return value

    def output(self, arg: Any) -> str:
        if not isinstance(arg, fx.Node):
            raise self.error(f"an output is not a tensor ({arg!r})")
        try:
            return self.val(arg)
        except _Unsupported as exc:
            raise self.error(f"output {arg.name} cannot be expressed: {exc}") from None

    def convert(self, n: fx.Node) -> None:
        if n.target is operator.getitem:
            src, idx = n.args
            if src in self.fold:
                self.fold.add(n)
            else:
                self.env[n] = self.env[src][idx] if isinstance(self.env.get(src), list) else None
            return
        static = n in self.static
        if static and (n in self.pure or n.target not in _HANDLERS):
            tags = getattr(n.target, "tags", ())
            if torch.Tag.nondeterministic_seeded in tags and n.target not in _HANDLERS:
                raise self.error(
                    f"node {n.name} ({_op_name(n.target)}) draws random numbers; the graph IR "
                    "is deterministic"
                )
            self.fold.add(n)
            return
        handler = _HANDLERS.get(n.target)
        if handler is None:  # _unknown_ops found none, so this cannot happen
            raise self.error(f"operator {_op_name(n.target)} is not supported by the graph IR")
        mark = len(self.nodes)
        try:
            handler(self, n)
        except _Unsupported as exc:
            del self.nodes[mark:]
            if static:
                self.fold.add(n)
                return
            raise self.error(
                f"node {n.name}: {_op_name(n.target)} with {exc} is not supported by the graph IR"
            ) from None

    def check_types(self, graph: Graph) -> None:
        """Each node's inferred type must be its exported one (a mapping bug otherwise)."""
        for node in graph.nodes:
            try:
                types = infer_types(node, [graph.types[v] for v in node.inputs])
            except GraphError as exc:
                raise self.error(f"internal: imported node does not type-check: {exc}") from exc
            for v, t in zip(node.outputs, types, strict=True):
                if graph.types[v] != t:
                    raise self.error(
                        f"internal: node {node.name} ({node.op}) gives {t}, the export says "
                        f"{graph.types[v]}"
                    )


# -- the operator mappings ----------------------------------------------------------------

Handler = Callable[[_Converter, fx.Node], None]
_HANDLERS: dict[Any, Handler] = {}


def _handles(*ops: Any) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op in ops:
            _HANDLERS[op] = fn
        return fn

    return register


def _args(n: fx.Node, names: Sequence[str], defaults: dict[str, Any]) -> list[Any]:
    """`n`'s arguments by position or keyword, with defaults."""
    out = []
    for i, key in enumerate(names):
        if i < len(n.args):
            out.append(n.args[i])
        elif key in n.kwargs:
            out.append(n.kwargs[key])
        else:
            out.append(defaults.get(key))
    return out


def _rank(n: fx.Node) -> int:
    return len(n.meta["val"].shape)


def _out_shape(n: fx.Node) -> list[int]:
    return [int(d) for d in n.meta["val"].shape]


@_handles(
    aten.dropout.default,
    aten.feature_dropout.default,
    aten.alpha_dropout.default,
    aten.clone.default,
    aten.contiguous.default,
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
    aten.to.dtype,
    aten.to.dtype_layout,
    aten._to_copy.default,
    aten.type_as.default,
)
def _noop(cv: _Converter, n: fx.Node) -> None:
    x = n.args[0]
    if n.meta["val"].dtype != x.meta["val"].dtype:
        raise _Unsupported(f"a dtype conversion to {_dtype(n.meta['val'].dtype)}")
    cv.alias(n, cv.val(x))


@_handles(aten.native_dropout.default)
def _native_dropout(cv: _Converter, n: fx.Node) -> None:
    if n.args[2] if len(n.args) > 2 else n.kwargs.get("train"):
        raise _Unsupported("training mode")
    cv.env[n] = [cv.val(n.args[0]), None]


@_handles(
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
)
def _assertion(cv: _Converter, n: fx.Node) -> None:
    cv.env[n] = None


@_handles(aten.linear.default)
def _linear(cv: _Converter, n: fx.Node) -> None:
    x, w, b = _args(n, ("input", "weight", "bias"), {})
    cv.emit(n, "linear", [cv.val(x), cv.val(w)] + ([cv.val(b)] if b is not None else []))


def _transposed_weight(arg: Any) -> fx.Node | None:
    """`w` if `arg` is `w.t()` (or the same transpose/permute) of a 2-D `w`."""
    if not isinstance(arg, fx.Node) or arg.op != "call_function" or _rank(arg) != 2:
        return None
    if arg.target == aten.t.default:
        return arg.args[0]
    if arg.target == aten.permute.default and list(arg.args[1]) == [1, 0]:
        return arg.args[0]
    if arg.target == aten.transpose.int and {d % 2 for d in arg.args[1:3]} == {0, 1}:
        return arg.args[0]
    return None


@_handles(aten.addmm.default)
def _addmm(cv: _Converter, n: fx.Node) -> None:
    bias, a, b, beta, alpha = _args(
        n, ("self", "mat1", "mat2", "beta", "alpha"), {"beta": 1, "alpha": 1}
    )
    if beta != 1 or alpha != 1:
        raise _Unsupported(f"beta={beta}, alpha={alpha}")
    w = _transposed_weight(b)
    if w is not None and _rank(bias) == 1:
        cv.emit(n, "linear", [cv.val(a), cv.val(w), cv.val(bias)])
        return
    prod = cv.tmp(f"{n.name}_mm", "matmul", [cv.val(a), cv.val(b)], {})
    cv.emit(n, "add", [prod, cv.val(bias)])


@_handles(aten.mm.default, aten.bmm.default, aten.matmul.default)
def _matmul(cv: _Converter, n: fx.Node) -> None:
    a, b = n.args[:2]
    w = _transposed_weight(b) if n.target == aten.mm.default else None
    if w is not None:
        cv.emit(n, "linear", [cv.val(a), cv.val(w)])
    else:
        cv.emit(n, "matmul", [cv.val(a), cv.val(b)])


def _emit_conv(
    cv: _Converter,
    n: fx.Node,
    x: Any,
    w: Any,
    b: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
) -> None:
    if _rank(x) != 4:
        raise _Unsupported(f"a {_rank(x) - 2}-d convolution")
    if isinstance(padding, str):
        kernel = cv.shape(w)[2:]
        dil = _pair(dilation)
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same" and all(
            d * (k - 1) % 2 == 0 for d, k in zip(dil, kernel, strict=True)
        ):
            padding = [d * (k - 1) // 2 for d, k in zip(dil, kernel, strict=True)]
        else:
            raise _Unsupported(f"padding={padding!r} (asymmetric)")
    attrs = {
        "stride": _pair(stride),
        "padding": _pair(padding),
        "dilation": _pair(dilation),
        "groups": int(groups),
    }
    cv.emit(n, "conv2d", [cv.val(x), cv.val(w)] + ([cv.val(b)] if b is not None else []), attrs)


@_handles(aten.conv2d.default, aten.conv2d.padding)
def _conv2d(cv: _Converter, n: fx.Node) -> None:
    args = _args(
        n,
        ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        {"stride": 1, "padding": 0, "dilation": 1, "groups": 1},
    )
    _emit_conv(cv, n, *args)


@_handles(aten.convolution.default)
def _convolution(cv: _Converter, n: fx.Node) -> None:
    x, w, b, stride, padding, dilation, transposed, _, groups = n.args[:9]
    if transposed:
        raise _Unsupported("a transposed convolution")
    _emit_conv(cv, n, x, w, b, stride, padding, dilation, groups)


def _affine(
    cv: _Converter, n: fx.Node, x: fx.Node, w: Any, b: Any, shape: Sequence[int]
) -> list[str]:
    """IR values for a norm's weight and bias, made up (ones, zeros) where absent."""
    dtype = x.meta["val"].dtype
    out = []
    for arg, fill, tag in ((w, 1.0, "weight"), (b, 0.0, "bias")):
        if arg is None:
            out.append(
                cv.add_constant(f"{n.name}_{tag}", torch.full(tuple(shape), fill, dtype=dtype))
            )
        else:
            out.append(cv.val(arg))
    return out


def _emit_batch_norm(
    cv: _Converter,
    n: fx.Node,
    x: Any,
    w: Any,
    b: Any,
    mean: Any,
    var: Any,
    eps: float,
    outputs: int | None,
) -> None:
    if mean is None or var is None:
        raise _Unsupported("batch statistics (no running mean/var)")
    channels = cv.shape(x)[1]
    weight, bias = _affine(cv, n, x, w, b, [channels])
    inputs = [cv.val(x), weight, bias, cv.val(mean), cv.val(var)]
    cv.emit(n, "batch_norm", inputs, {"eps": float(eps)}, outputs=outputs)


@_handles(aten.batch_norm.default)
def _batch_norm(cv: _Converter, n: fx.Node) -> None:
    x, w, b, mean, var, training, _, eps = n.args[:8]
    if training:
        raise _Unsupported("training mode")
    _emit_batch_norm(cv, n, x, w, b, mean, var, eps, None)


@_handles(aten._native_batch_norm_legit_no_training.default)
def _native_batch_norm(cv: _Converter, n: fx.Node) -> None:
    x, w, b, mean, var, _, eps = n.args[:7]
    _emit_batch_norm(cv, n, x, w, b, mean, var, eps, 1)


def _emit_layer_norm(
    cv: _Converter, n: fx.Node, x: Any, shape: Any, w: Any, b: Any, eps: float, outputs: int | None
) -> None:
    shape = [int(d) for d in shape]
    inputs = [cv.val(x)]
    if w is not None or b is not None:
        inputs += _affine(cv, n, x, w, b, shape)
    cv.emit(
        n, "layer_norm", inputs, {"normalized_shape": shape, "eps": float(eps)}, outputs=outputs
    )


@_handles(aten.layer_norm.default)
def _layer_norm(cv: _Converter, n: fx.Node) -> None:
    x, shape, w, b, eps = _args(
        n, ("input", "normalized_shape", "weight", "bias", "eps"), {"eps": 1e-5}
    )
    _emit_layer_norm(cv, n, x, shape, w, b, eps, None)


@_handles(aten.native_layer_norm.default)
def _native_layer_norm(cv: _Converter, n: fx.Node) -> None:
    x, shape, w, b, eps = n.args[:5]
    _emit_layer_norm(cv, n, x, shape, w, b, eps, 1)


# element-wise binary ops: (IR op for tensor-tensor, how a scalar operand maps)
def _binary(cv: _Converter, n: fx.Node, op: str, x: Any, y: Any, alpha: Any = 1) -> None:
    if isinstance(y, fx.Node):
        yv = cv.val(y)
        if alpha != 1:
            yv = cv.tmp(f"{n.name}_alpha", "mul_scalar", [yv], {"value": _scalar(alpha)})
        cv.emit(n, op, [cv.val(x), yv])
        return
    value = _scalar(y)
    if op in ("add", "sub"):
        value = value * alpha if op == "add" else -value * alpha
        cv.emit(n, "add_scalar", [cv.val(x)], {"value": value})
    else:
        cv.emit(n, f"{op}_scalar", [cv.val(x)], {"value": value})


@_handles(aten.add.Tensor, aten.add.Scalar)
def _add(cv: _Converter, n: fx.Node) -> None:
    x, y, alpha = _args(n, ("self", "other", "alpha"), {"alpha": 1})
    _binary(cv, n, "add", x, y, alpha)


@_handles(aten.sub.Tensor, aten.sub.Scalar)
def _sub(cv: _Converter, n: fx.Node) -> None:
    x, y, alpha = _args(n, ("self", "other", "alpha"), {"alpha": 1})
    _binary(cv, n, "sub", x, y, alpha)


@_handles(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(cv: _Converter, n: fx.Node) -> None:
    x, y, alpha = _args(n, ("self", "other", "alpha"), {"alpha": 1})
    if isinstance(y, fx.Node):  # y - alpha * x
        _binary(cv, n, "sub", y, x, alpha)
        return
    scaled = cv.tmp(f"{n.name}_neg", "mul_scalar", [cv.val(x)], {"value": -_scalar(alpha)})
    cv.emit(n, "add_scalar", [scaled], {"value": _scalar(y)})


@_handles(aten.mul.Tensor, aten.mul.Scalar)
def _mul(cv: _Converter, n: fx.Node) -> None:
    _binary(cv, n, "mul", n.args[0], n.args[1])


@_handles(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode)
def _div(cv: _Converter, n: fx.Node) -> None:
    mode = n.kwargs.get("rounding_mode", n.args[2] if len(n.args) > 2 else None)
    if mode is not None:
        raise _Unsupported(f"rounding_mode={mode!r}")
    _binary(cv, n, "div", n.args[0], n.args[1])


@_handles(aten.pow.Tensor_Scalar)
def _pow(cv: _Converter, n: fx.Node) -> None:
    cv.emit(n, "pow_scalar", [cv.val(n.args[0])], {"value": _scalar(n.args[1])})


@_handles(aten.reciprocal.default)
def _reciprocal(cv: _Converter, n: fx.Node) -> None:
    cv.emit(n, "pow_scalar", [cv.val(n.args[0])], {"value": -1})


_UNARY = {
    aten.relu.default: "relu",
    aten.tanh.default: "tanh",
    aten.sigmoid.default: "sigmoid",
    aten.sqrt.default: "sqrt",
    aten.rsqrt.default: "rsqrt",
    aten.erf.default: "erf",
    aten.neg.default: "neg",
}


@_handles(*_UNARY)
def _unary(cv: _Converter, n: fx.Node) -> None:
    cv.emit(n, _UNARY[n.target], [cv.val(n.args[0])])


@_handles(aten.gelu.default)
def _gelu(cv: _Converter, n: fx.Node) -> None:
    approximate = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
    cv.emit(n, "gelu", [cv.val(n.args[0])], {"approximate": approximate})


@_handles(aten.softmax.int, aten._softmax.default)
def _softmax(cv: _Converter, n: fx.Node) -> None:
    x, dim = n.args[:2]
    if n.meta["val"].dtype != x.meta["val"].dtype:
        raise _Unsupported("a dtype change")
    cv.emit(n, "softmax", [cv.val(x)], {"dim": _norm_dim(dim, _rank(x))})


@_handles(aten.transpose.int)
def _transpose(cv: _Converter, n: fx.Node) -> None:
    x, d0, d1 = n.args
    d0, d1 = sorted((_norm_dim(d0, _rank(x)), _norm_dim(d1, _rank(x))))
    if d0 == d1:
        cv.alias(n, cv.val(x))
    else:
        cv.emit(n, "transpose", [cv.val(x)], {"dim0": d0, "dim1": d1})


@_handles(aten.t.default)
def _t(cv: _Converter, n: fx.Node) -> None:
    x = n.args[0]
    if _rank(x) < 2:
        cv.alias(n, cv.val(x))
    else:
        cv.emit(n, "transpose", [cv.val(x)], {"dim0": 0, "dim1": 1})


@_handles(aten.permute.default)
def _permute(cv: _Converter, n: fx.Node) -> None:
    x, dims = n.args
    dims = [_norm_dim(d, _rank(x)) for d in dims]
    if dims == sorted(dims):
        cv.alias(n, cv.val(x))
    else:
        cv.emit(n, "permute", [cv.val(x)], {"dims": dims})


@_handles(
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
    aten.unsqueeze.default,
    aten.squeeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.view_as.default,
    aten.reshape_as.default,
)
def _reshape(cv: _Converter, n: fx.Node) -> None:
    x = n.args[0]
    shape = _out_shape(n)
    if shape == list(cv.shape(x)):
        cv.alias(n, cv.val(x))
    else:
        cv.emit(n, "reshape", [cv.val(x)], {"shape": shape})


@_handles(aten.expand.default, aten.expand_as.default)
def _expand(cv: _Converter, n: fx.Node) -> None:
    x = n.args[0]
    shape = _out_shape(n)
    if shape == list(cv.shape(x)):
        cv.alias(n, cv.val(x))
    else:
        cv.emit(n, "expand", [cv.val(x)], {"shape": shape})


@_handles(aten.cat.default, aten.concat.default)
def _cat(cv: _Converter, n: fx.Node) -> None:
    tensors = list(n.args[0])
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    if len(tensors) == 1:
        cv.alias(n, cv.val(tensors[0]))
        return
    cv.emit(n, "concat", [cv.val(t) for t in tensors], {"dim": _norm_dim(dim, _rank(n))})


@_handles(aten.stack.default)
def _stack(cv: _Converter, n: fx.Node) -> None:
    tensors = list(n.args[0])
    dim = _norm_dim(n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0), _rank(n))
    parts = []
    for i, t in enumerate(tensors):
        shape = list(cv.shape(t))
        shape.insert(dim, 1)
        parts.append(cv.tmp(f"{n.name}_part{i}", "reshape", [cv.val(t)], {"shape": shape}))
    if len(parts) == 1:
        cv.alias(n, parts[0])
    else:
        cv.emit(n, "concat", parts, {"dim": dim})


@_handles(aten.scaled_dot_product_attention.default)
def _sdpa(cv: _Converter, n: fx.Node) -> None:
    """softmax(q k^T * scale + mask) v, as torch's math reference computes it."""
    q, k, v, mask, dropout_p, causal, scale, gqa = _args(
        n,
        ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"),
        {"dropout_p": 0.0, "is_causal": False, "enable_gqa": False},
    )
    if dropout_p or gqa:
        raise _Unsupported(f"dropout_p={dropout_p}, enable_gqa={gqa}")
    rank = _rank(q)
    length, embed = cv.shape(q)[-2:]
    source = cv.shape(k)[-2]
    dtype = q.meta["val"].dtype
    kt = cv.tmp(f"{n.name}_kt", "transpose", [cv.val(k)], {"dim0": rank - 2, "dim1": rank - 1})
    s = cv.tmp(f"{n.name}_scores", "matmul", [cv.val(q), kt], {})
    scale = scale if scale is not None else 1.0 / math.sqrt(embed)
    s = cv.tmp(f"{n.name}_scaled", "mul_scalar", [s], {"value": float(scale)})
    if causal:
        keep = torch.ones(length, source, dtype=torch.bool).tril()
        additive = torch.zeros(length, source, dtype=dtype).masked_fill(~keep, -math.inf)
        s = cv.tmp(
            f"{n.name}_causal", "add", [s, cv.add_constant(f"{n.name}_causal_mask", additive)], {}
        )
    if mask is not None:
        if mask.meta["val"].dtype == torch.bool:
            if mask not in cv.static:
                raise _Unsupported("a boolean attn_mask computed from the inputs")
            keep = cv.evaluate(mask)
            additive = torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, -math.inf)
            m = cv.add_constant(f"{n.name}_mask", additive)
        else:
            m = cv.val(mask)
        s = cv.tmp(f"{n.name}_masked", "add", [s, m], {})
    p = cv.tmp(f"{n.name}_probs", "softmax", [s], {"dim": rank - 1})
    cv.emit(n, "matmul", [p, cv.val(v)])


@_handles(
    aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.tensor_split.sections
)
def _split(cv: _Converter, n: fx.Node) -> None:
    x = n.args[0]
    dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    dim = _norm_dim(dim, _rank(x))
    sizes = [int(v.shape[dim]) for v in n.meta["val"]]
    cv.emit(n, "split", [cv.val(x)], {"sizes": sizes, "dim": dim})


@_handles(aten.unbind.int)
def _unbind(cv: _Converter, n: fx.Node) -> None:
    x = n.args[0]
    dim = _norm_dim(n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0), _rank(x))
    count = cv.shape(x)[dim]
    parts = cv.tmp_multi(n.name, "split", [cv.val(x)], {"sizes": [1] * count, "dim": dim}, count)
    squeezed = []
    for part, v in zip(parts, n.meta["val"], strict=True):
        squeezed.append(cv.tmp(f"{part}_squeeze", "reshape", [part], {"shape": list(v.shape)}))
    cv.env[n] = squeezed


def _slice_bounds(size: int, start: Any, end: Any) -> tuple[int, int]:
    """Python slice bounds, clamped to [0, size] and made non-negative."""
    s = 0 if start is None else int(start)
    e = size if end is None else int(end)
    s = min(max(s + size if s < 0 else s, 0), size)
    e = min(max(e + size if e < 0 else e, s), size)
    return s, e


@_handles(aten.slice.Tensor)
def _slice(cv: _Converter, n: fx.Node) -> None:
    x, dim, start, end, step = _args(
        n, ("self", "dim", "start", "end", "step"), {"dim": 0, "step": 1}
    )
    dim = _norm_dim(dim, _rank(x))
    start, end = _slice_bounds(cv.shape(x)[dim], start, end)
    if start == 0 and end == cv.shape(x)[dim] and step == 1:
        cv.alias(n, cv.val(x))
    else:
        cv.emit(
            n, "slice", [cv.val(x)], {"dim": dim, "start": start, "end": end, "step": int(step)}
        )


@_handles(aten.narrow.default)
def _narrow(cv: _Converter, n: fx.Node) -> None:
    x, dim, start, length = n.args
    dim = _norm_dim(dim, _rank(x))
    start = _norm_dim(int(start), cv.shape(x)[dim])
    if start == 0 and length == cv.shape(x)[dim]:
        cv.alias(n, cv.val(x))
    else:
        cv.emit(
            n,
            "slice",
            [cv.val(x)],
            {"dim": dim, "start": start, "end": start + int(length), "step": 1},
        )


@_handles(aten.select.int)
def _select(cv: _Converter, n: fx.Node) -> None:
    x, dim, index = n.args
    dim = _norm_dim(dim, _rank(x))
    index = _norm_dim(int(index), cv.shape(x)[dim])
    part = cv.val(x)
    if cv.shape(x)[dim] != 1:
        part = cv.tmp(
            f"{n.name}_slice",
            "slice",
            [part],
            {"dim": dim, "start": index, "end": index + 1, "step": 1},
        )
    cv.emit(n, "reshape", [part], {"shape": _out_shape(n)})


@_handles(aten.embedding.default)
def _embedding(cv: _Converter, n: fx.Node) -> None:
    cv.emit(n, "embedding", [cv.val(n.args[0]), cv.val(n.args[1])])


def _reduce(cv: _Converter, n: fx.Node, op: str) -> None:
    x, dims, keepdim, dtype = _args(n, ("self", "dim", "keepdim", "dtype"), {"keepdim": False})
    if dtype is not None and dtype != x.meta["val"].dtype:
        raise _Unsupported("a dtype change")
    rank = _rank(x)
    dims = list(range(rank)) if not dims else [_norm_dim(d, rank) for d in dims]
    cv.emit(n, op, [cv.val(x)], {"dims": sorted(dims), "keepdim": bool(keepdim)})


@_handles(aten.mean.dim, aten.mean.default)
def _mean(cv: _Converter, n: fx.Node) -> None:
    if n.target == aten.mean.default:
        cv.emit(
            n,
            "mean",
            [cv.val(n.args[0])],
            {"dims": list(range(_rank(n.args[0]))), "keepdim": False},
        )
    else:
        _reduce(cv, n, "mean")


@_handles(aten.sum.dim_IntList, aten.sum.default)
def _sum(cv: _Converter, n: fx.Node) -> None:
    if n.target == aten.sum.default:
        cv.emit(
            n, "sum", [cv.val(n.args[0])], {"dims": list(range(_rank(n.args[0]))), "keepdim": False}
        )
    else:
        _reduce(cv, n, "sum")


def _pool_attrs(kernel: Any, stride: Any, padding: Any) -> dict[str, Any]:
    kernel = _pair(kernel)
    return {
        "kernel": kernel,
        "stride": _pair(stride) if stride else kernel,
        "padding": _pair(padding),
    }


@_handles(aten.max_pool2d.default, aten.max_pool2d_with_indices.default)
def _max_pool2d(cv: _Converter, n: fx.Node) -> None:
    x, kernel, stride, padding, dilation, ceil = _args(
        n,
        ("self", "kernel_size", "stride", "padding", "dilation", "ceil_mode"),
        {"stride": [], "padding": 0, "dilation": 1, "ceil_mode": False},
    )
    if _pair(dilation) != [1, 1] or ceil:
        raise _Unsupported(f"dilation={dilation}, ceil_mode={ceil}")
    outputs = 1 if n.target == aten.max_pool2d_with_indices.default else None
    cv.emit(n, "max_pool2d", [cv.val(x)], _pool_attrs(kernel, stride, padding), outputs=outputs)


@_handles(aten.avg_pool2d.default)
def _avg_pool2d(cv: _Converter, n: fx.Node) -> None:
    x, kernel, stride, padding, ceil, include_pad, divisor = _args(
        n,
        (
            "self",
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
            "divisor_override",
        ),
        {"stride": [], "padding": 0, "ceil_mode": False, "count_include_pad": True},
    )
    if ceil or not include_pad or divisor is not None:
        raise _Unsupported(
            f"ceil_mode={ceil}, count_include_pad={include_pad}, divisor_override={divisor}"
        )
    cv.emit(n, "avg_pool2d", [cv.val(x)], _pool_attrs(kernel, stride, padding))


@_handles(aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default)
def _adaptive_avg_pool2d(cv: _Converter, n: fx.Node) -> None:
    cv.emit(n, "adaptive_avg_pool2d", [cv.val(n.args[0])], {"size": _out_shape(n)[-2:]})


@_handles(aten.pad.default, aten.constant_pad_nd.default)
def _pad(cv: _Converter, n: fx.Node) -> None:
    x, pad = n.args[:2]
    if n.target == aten.pad.default:
        mode, value = _args(n, ("self", "pad", "mode", "value"), {"mode": "constant"})[2:]
    else:
        mode, value = "constant", _args(n, ("self", "pad", "value"), {"value": 0})[2]
    if mode != "constant" or value not in (None, 0):
        raise _Unsupported(f"mode={mode!r}, value={value}")
    cv.emit(n, "pad", [cv.val(x)], {"pad": [int(p) for p in pad]})
