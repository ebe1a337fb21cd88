"""The graph frontend, executor and model suites on real models (no mocks): each suite
model imports through torch.export, round-trips through JSON and, run again from the IR,
computes what the PyTorch model computes, on its example inputs and on fresh ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

import pytest
import torch
from torch import nn

from tunelab.workers.graphs import execute, frontend, models
from tunelab.workers.graphs.execute import Executable, compare, random_inputs
from tunelab.workers.graphs.frontend import FrontendError, Imported, import_module
from tunelab.workers.graphs.ir import Graph
from tunelab.workers.graphs.ops import retype

torch.set_num_threads(1)


@cache
def _suite(name: str, size: str) -> tuple[nn.Module, Imported]:
    model, inputs = models.build(name, size, seed=0)
    return model, import_module(model, inputs, name=name)


def _reference(model: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(*inputs)
    return list(out) if isinstance(out, tuple | list) else [out]


def _check_equivalent(model: nn.Module, imp: Imported) -> None:
    """JSON round trip, types, and the IR's results against the model's."""
    g = imp.graph
    g.validate()
    assert Graph.loads(g.dumps()).dumps() == g.dumps()
    retyped = g.copy()
    retype(retyped)
    assert retyped.types == g.types
    assert set(imp.constants) == set(g.constants)
    assert [tuple(x.shape) for x in imp.inputs] == [g.types[v].shape for v in g.inputs]

    run = Executable(g, imp.constants)
    assert compare(run(imp.inputs), _reference(model, imp.inputs)) is None
    for seed in (1, 2):
        fresh = random_inputs(g, seed, like=imp.inputs)
        assert compare(run(fresh), _reference(model, fresh)) is None


def _consumers_by_op(g: Graph, op: str) -> dict[str, list[str]]:
    """For each value: the names of the `op` nodes whose first input it is."""
    out: dict[str, list[str]] = {}
    for n in g.nodes:
        if n.op == op:
            out.setdefault(n.inputs[0], []).append(n.name)
    return out


# -- the suite -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(models.SUITE))
def test_suite_model_imports_and_matches_pytorch(name: str) -> None:
    model, imp = _suite(name, "test")
    _check_equivalent(model, imp)
    assert imp.graph.name == name
    assert len(imp.graph) > 20


@pytest.mark.parametrize("name", sorted(models.SUITE))
def test_suite_model_cpu_size_imports_and_matches_pytorch(name: str) -> None:
    model, imp = _suite(name, "cpu")
    _check_equivalent(model, imp)


def test_bert_cpu_graph() -> None:
    _, imp = _suite("bert", "cpu")
    counts = imp.graph.op_counts()
    assert counts["linear"] == 2 * 6  # q, k, v, out, ffn in, ffn out per layer
    assert counts["matmul"] == 2 * 2
    assert imp.graph.types[imp.graph.outputs[0]].shape == (1, 64, 256)


@pytest.mark.parametrize("name", ["bert", "vit", "transducer"])
def test_transformers_have_qkv_linears_sharing_their_input(name: str) -> None:
    _, imp = _suite(name, "test")
    g = imp.graph
    shared = [names for names in _consumers_by_op(g, "linear").values() if len(names) == 3]
    assert len(shared) == 2  # one q/k/v triple per layer
    counts = g.op_counts()
    assert counts["matmul"] == 4 and counts["softmax"] == 2
    assert counts["transpose"] >= 8 and counts["reshape"] >= 6
    # attention scores: matmul feeding an add (the mask or bias) or a scale
    producers = g.producers()
    adds = [n for n in g.nodes if n.op == "add" and any(
        v in producers and producers[v].op in ("matmul", "linear") for v in n.inputs)]  # fmt: skip
    assert adds
    # negative dims are normalised
    for n in g.nodes:
        if n.op == "softmax":
            assert n.attrs["dim"] == len(g.types[n.inputs[0]].shape) - 1


def test_bert_weights_are_named_constants_and_token_ids_an_int_input() -> None:
    _, imp = _suite("bert", "test")
    g = imp.graph
    assert g.inputs == ["input_ids"]
    assert g.types["input_ids"].dtype == "int64"
    assert "p_encoder_layer_0_attention_self_query_weight" in g.constants
    w = imp.constants["p_encoder_layer_0_attention_self_query_weight"]
    assert tuple(w.shape) == (64, 64) and not w.requires_grad
    # position ids (a buffer) and the all-ones attention mask become weight-only nodes or
    # folded constants, never work per call
    assert g.constant_nodes()
    assert not {"dropout", "clone", "contiguous"} & set(g.op_counts())


def test_resnext_has_conv_bn_relu_chains_and_parallel_convs() -> None:
    _, imp = _suite("resnext50", "test")
    g = imp.graph
    consumers = g.consumers()
    chains = 0
    for n in g.nodes:
        if n.op != "conv2d":
            continue
        (bn,) = consumers[n.outputs[0]]
        assert bn.op == "batch_norm"  # every conv is followed by its batch norm
        after = consumers[bn.outputs[0]]
        if len(after) == 1 and after[0].op == "relu":
            chains += 1
    assert chains >= 4
    grouped = [n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] == 32]
    assert len(grouped) == 2
    assert all(len(n.attrs["stride"]) == 2 and len(n.attrs["padding"]) == 2 for n in grouped)
    parallel = [names for names in _consumers_by_op(g, "conv2d").values() if len(names) == 2]
    assert len(parallel) == 2  # shortcut and first 1x1 conv of each downsampling block


def test_transducer_cpu_size_shape_and_structure() -> None:
    model, inputs = models.build("transducer", "cpu")
    assert tuple(inputs[0].shape) == (1, 64, 80)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1 + 2 * 6


# -- models.build / models.load --------------------------------------------------------------


def test_suite_entries_have_the_three_sizes() -> None:
    assert set(models.SUITE) == {"bert", "vit", "resnext50", "transducer"}
    for entry in models.SUITE.values():
        assert set(entry.sizes) == {"full", "cpu", "test"}
        assert entry.description
    assert models.SUITE["bert"].sizes["full"]["hidden"] == 1024


def test_build_is_deterministic_in_the_seed() -> None:
    a, xa = models.build("transducer", "test", seed=3)
    b, xb = models.build("transducer", "test", seed=3)
    c, _ = models.build("transducer", "test", seed=4)
    assert torch.equal(xa[0], xb[0])
    assert torch.equal(a.proj.weight, b.proj.weight)
    assert not torch.equal(a.proj.weight, c.proj.weight)
    assert not a.training


def test_unknown_suite_name_or_size() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*bert.*resnext50"):
        models.build("nope", "test")
    with pytest.raises(ValueError, match=r"no size 'huge'.*full, cpu, test"):
        models.build("bert", "huge")
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*module:function"):
        models.load("nope")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:f", r"cannot import module 'no_such_module_xyz'.*ModuleNotFound"),
        ("tunelab:nothing", r"tunelab\.nothing does not exist"),
        ("tests.data.user_models:NOT_CALLABLE", r"is not callable"),
        ("tests.data.user_models:raises", r"raises\(\) raised RuntimeError: weights file"),
        ("tests.data.user_models:not_a_model", r"must return \(torch\.nn\.Module.*got tuple"),
        ("tests.data.user_models:", r"expected 'module:function'"),
    ],
)
def test_load_rejects_bad_references(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models.load(ref)


def test_user_model_from_module_function() -> None:
    imp = frontend.import_model("tests.data.user_models:tiny_convnet", seed=5)
    model, inputs = models.load("tests.data.user_models:tiny_convnet", seed=5)
    assert torch.equal(inputs[0], imp.inputs[0])
    _check_equivalent(model, imp)
    assert imp.graph.name == "tests.data.user_models:tiny_convnet"
    assert imp.graph.op_counts() == {
        "adaptive_avg_pool2d": 1, "add": 1, "batch_norm": 1, "conv2d": 2, "linear": 1,
        "max_pool2d": 1, "relu": 1, "reshape": 1,
    }  # fmt: skip


# -- the frontend on hand-written models -------------------------------------------------------


class _DataDependentBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


class _Cumsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1) + 1


class _BooleanMask(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x > 0] * 2


def test_untraceable_model_is_a_clear_frontend_error() -> None:
    with pytest.raises(FrontendError) as info:
        import_module(_DataDependentBranch(), (torch.randn(4),), name="branchy")
    msg = str(info.value)
    assert msg.startswith("model 'branchy': torch.export cannot trace it: ")
    assert "data-dependent" in msg
    assert "\n" not in msg


def test_unsupported_operator_is_named() -> None:
    with pytest.raises(FrontendError) as info:
        import_module(_Cumsum(), (torch.randn(2, 3),))
    msg = str(info.value)
    assert msg.startswith("model '_Cumsum': operator aten.cumsum.default is not supported")
    assert "(supported: " in msg and "linear" in msg and "conv2d" in msg


def test_data_dependent_shape_is_a_frontend_error() -> None:
    with pytest.raises(FrontendError, match=r"model 'masky': .*data-dependent shape"):
        import_module(_BooleanMask(), (torch.randn(5),), name="masky")


class _Noisy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn(3)


def test_random_operators_are_rejected() -> None:
    with pytest.raises(FrontendError, match=r"model 'noisy': node .*randn.* draws random numbers"):
        import_module(_Noisy(), (torch.randn(3),), name="noisy")


def test_non_tensor_example_input_is_rejected() -> None:
    with pytest.raises(FrontendError, match=r"example input 1 is a int"):
        import_module(_Cumsum(), (torch.randn(2), 3))


class _Mixed(nn.Module):
    """Scalar operands, negative dims, splits, slices, selects, pads and weight-only ops."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 8))
        self.norm = nn.LayerNorm(8, elementwise_affine=False)
        self.bn = nn.BatchNorm2d(2, affine=False)
        self.bn.running_mean.uniform_(-1, 1)
        self.register_buffer("bias", torch.randn(6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = x @ self.w.t() + self.bias * 2  # weight-only transpose and scale
        a, b = y.split([2, 4], dim=-1)
        z = 1 - torch.cat([b, a], -1).sum(-1, keepdim=True) ** 2 / 3
        h = self.norm(x)[:, 0] - x.mean()
        img = self.bn(x.reshape(1, 2, 4, 4))
        img = nn.functional.avg_pool2d(nn.functional.pad(img, (1, 1, 1, 1)), 2)
        parts = torch.stack(list(y.unbind(-1))[:3], dim=-1)
        return z, h, img.flatten(1), x[:, 2:-1].rsqrt(), parts.softmax(-2), y.chunk(3, 1)[1]


def test_mixed_operators_map_and_match() -> None:
    model = _Mixed().eval()
    imp = import_module(model, (torch.rand(4, 8) + 0.5,))
    _check_equivalent_positive(model, imp)
    counts = imp.graph.op_counts()
    for op in ("add_scalar", "pow_scalar", "div_scalar", "split", "concat", "layer_norm",
               "batch_norm", "pad", "avg_pool2d", "slice", "rsqrt", "sum", "mean"):  # fmt: skip
        assert counts.get(op), (op, counts)
    for n in imp.graph.nodes:
        for key in ("dim", "dim0", "dim1"):
            if key in n.attrs:
                assert n.attrs[key] >= 0, n
        if n.op in ("sum", "mean"):
            assert all(d >= 0 for d in n.attrs["dims"])
    assert imp.graph.constant_nodes()  # w.t() and bias * 2 are weight preparation


def _check_equivalent_positive(model: nn.Module, imp: Imported) -> None:
    """As _check_equivalent, with fresh inputs kept positive (the model takes rsqrt)."""
    g = imp.graph
    assert Graph.loads(g.dumps()).dumps() == g.dumps()
    run = Executable(g, imp.constants)
    assert compare(run(imp.inputs), _reference(model, imp.inputs)) is None
    fresh = [x.abs() + 0.5 for x in random_inputs(g, 7)]
    assert compare(run(fresh), _reference(model, fresh)) is None


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.register_buffer("keep", torch.ones(5, 5, dtype=torch.bool).tril())
        self.register_buffer("bias", torch.randn(5, 5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v = self.qkv(x).view(1, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
        sdpa = nn.functional.scaled_dot_product_attention
        return (
            sdpa(q, k, v),
            sdpa(q, k, v, is_causal=True),
            sdpa(q, k, v, attn_mask=self.keep),
            sdpa(q, k, v, attn_mask=self.bias, scale=0.3),
            nn.functional.silu(x),  # not mapped: decomposed into sigmoid and mul
        )


def test_sdpa_and_decomposed_operators() -> None:
    model = _Attention().eval()
    imp = import_module(model, (torch.randn(1, 5, 8),))
    _check_equivalent(model, imp)
    counts = imp.graph.op_counts()
    assert counts["softmax"] == 4 and counts["matmul"] == 8 and counts["sigmoid"] == 1


# -- execute ------------------------------------------------------------------------------------


def test_executable_folds_weight_nodes_and_repeats() -> None:
    _, imp = _suite("bert", "test")
    run = Executable(imp.graph, imp.constants)
    assert len(run._steps) == len(imp.graph) - len(imp.graph.constant_nodes())
    first = run(imp.inputs)
    second = run(imp.inputs)
    assert torch.equal(first[0], second[0])
    assert compare(execute.run(imp.graph, imp.constants, imp.inputs), first) is None


def test_random_inputs_ranges_and_seeds() -> None:
    _, imp = _suite("bert", "test")
    g = imp.graph
    like = [torch.full((1, 16), 7, dtype=torch.int64)]
    like[0][0, 0] = 3
    ids = random_inputs(g, 0, like=like)[0]
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (1, 16)
    assert int(ids.min()) >= 3 and int(ids.max()) <= 7
    assert int(random_inputs(g, 0)[0].max()) < 100
    assert torch.equal(random_inputs(g, 5)[0], random_inputs(g, 5)[0])
    _, vit = _suite("vit", "test")
    pixels = random_inputs(vit.graph, 0)[0]
    assert pixels.dtype == torch.float32 and 0.5 < float(pixels.std()) < 1.5


def test_compare_reports_where_outputs_differ() -> None:
    a = [torch.zeros(2, 3), torch.ones(4)]
    assert compare(a, [t.clone() for t in a]) is None
    b = [torch.zeros(2, 3), torch.ones(4)]
    b[1][2] = 1.5
    msg = compare(a, b)
    assert msg is not None and msg.startswith("output 1: max abs difference 0.5 at index [2]")
    assert "1 of 4 elements" in msg
    assert compare([torch.zeros(2)], [torch.zeros(3)]) == "output 0: shape (2,), expected (3,)"
    assert compare(a, a[:1]) == "2 outputs, expected 1"
    assert compare([torch.tensor([1.0, 1e-5])], [torch.tensor([1.0005, 0.0])]) is None
    nan = [torch.tensor([float("nan")])]
    assert compare(nan, nan) is None
    assert "difference inf" in (compare(nan, [torch.zeros(1)]) or "")


def test_executable_rejects_unknown_ops_and_missing_constants() -> None:
    _, imp = _suite("transducer", "test")
    g = imp.graph.copy()
    with pytest.raises(ValueError, match="no value for constants"):
        Executable(g, {})
    g.nodes[0].op = "no_such_op"
    with pytest.raises(ValueError, match="unknown operator 'no_such_op'"):
        Executable(g, imp.constants)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_executor_overhead_is_small() -> None:
    _, imp = _suite("transducer", "test")
    run = Executable(imp.graph, imp.constants)
    run(imp.inputs)
    per_call = min(_time(lambda: run(imp.inputs)) for _ in range(5))
    assert per_call < 0.05  # 50 tiny ops
