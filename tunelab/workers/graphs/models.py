"""Model suites for graph rewriting, built from their definitions with random weights.

Nothing is downloaded: the transformers models are built from a config
(`BertModel(BertConfig(...))`), the CNN and the audio encoder are written here in plain
`torch.nn`. Each suite model has sizes: `full` (the size the X-RLflow paper reports),
`cpu` (small enough to tune on a CPU) and `test` (tiny, for the unit tests).

A model can also come from the user: `load("package.module:function")` calls
`function()`, which returns `(model, example_inputs)`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class SuiteEntry:
    """One model of the suite: its sizes map a size name to the builder's settings."""

    name: str
    description: str
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- BERT and ViT (transformers, built from a config) --------------------------------------


def _bert_encoder(config: Any) -> nn.Module:
    """BertModel returning only `last_hidden_state` (one tensor: simpler to export; a
    subclass, so parameter names stay the model's own)."""
    from transformers import BertModel

    class BertEncoder(BertModel):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(input_ids).last_hidden_state

    return BertEncoder(config, add_pooling_layer=False)


def _vit_encoder(config: Any) -> nn.Module:
    """ViTModel returning only `last_hidden_state`."""
    from transformers import ViTModel

    class ViTEncoder(ViTModel):
        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(pixel_values).last_hidden_state

    return ViTEncoder(config, add_pooling_layer=False)


def _bert(
    *, layers: int, hidden: int, heads: int, intermediate: int, seq: int, vocab: int
) -> tuple[nn.Module, tuple]:
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max(512, seq),
        attn_implementation="eager",
    )
    model = _bert_encoder(config)
    return model, (torch.randint(0, vocab, (1, seq)),)


def _vit(
    *, layers: int, hidden: int, heads: int, intermediate: int, image: int, patch: int
) -> tuple[nn.Module, tuple]:
    from transformers import ViTConfig

    config = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        image_size=image,
        patch_size=patch,
        attn_implementation="eager",
    )
    model = _vit_encoder(config)
    return model, (torch.randn(1, 3, image, image),)


# -- ResNeXt (plain torch.nn) ----------------------------------------------------------------


class _ConvBN(nn.Sequential):
    """conv2d -> batch_norm (-> relu)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _Bottleneck(nn.Module):
    """A ResNeXt bottleneck (torchvision's, stride on the grouped 3x3 conv): 1x1 reduce,
    grouped 3x3, 1x1 expand, plus a 1x1 conv shortcut where the shape changes."""

    def __init__(
        self, cin: int, planes: int, stride: int, groups: int, width_per_group: int
    ) -> None:
        super().__init__()
        width = int(planes * width_per_group / 64) * groups
        cout = planes * 4
        self.conv1 = _ConvBN(cin, width, 1)
        self.conv2 = _ConvBN(width, width, 3, stride, groups)
        self.conv3 = _ConvBN(width, cout, 1, relu=False)
        self.shortcut = (
            _ConvBN(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + skip)


class ResNeXt(nn.Module):
    """ResNeXt (Xie et al. 2017): a ResNet whose bottlenecks use grouped 3x3 convs."""

    def __init__(
        self,
        stages: list[int],
        base: int = 64,
        groups: int = 32,
        width_per_group: int = 4,
        classes: int = 1000,
    ) -> None:
        super().__init__()
        self.stem = _ConvBN(3, base, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        blocks: list[nn.Module] = []
        cin = base
        for i, n in enumerate(stages):
            planes = base * 2**i
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(_Bottleneck(cin, planes, stride, groups, width_per_group))
                cin = planes * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pool(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _resnext(
    *, stages: list[int], base: int, groups: int, width_per_group: int, image: int, classes: int
) -> tuple[nn.Module, tuple]:
    model = ResNeXt(stages, base, groups, width_per_group, classes)
    # Random but not degenerate batch-norm statistics, so the folded affine maps matter.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model, (torch.randn(1, 3, image, image),)


# -- Transformer-Transducer audio encoder (plain torch.nn) ----------------------------------


class _SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (three linears reading
    the same input: the shared-input merge X-RLflow finds)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // h)
        y = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class _EncoderLayer(nn.Module):
    """A post-LN transformer encoder layer (as nn.TransformerEncoderLayer's default)."""

    def __init__(self, d: int, heads: int, ffn: int, activation: str) -> None:
        super().__init__()
        self.attn = _SelfAttention(d, heads)
        self.norm1 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.fc2 = nn.Linear(ffn, d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.fc2(self.act(self.fc1(x))))


class TransducerEncoder(nn.Module):
    """The audio encoder of a Transformer-Transducer: a linear projection of the filter
    bank features, sinusoidal positions, then post-LN transformer layers."""

    def __init__(
        self,
        features: int,
        d: int,
        heads: int,
        ffn: int,
        layers: int,
        seq: int,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(features, d)
        pos = torch.arange(seq, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(1e4) / d))
        pe = torch.zeros(seq, d)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("positions", pe[None])
        self.layers = nn.ModuleList(_EncoderLayer(d, heads, ffn, activation) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.positions
        for layer in self.layers:
            x = layer(x)
        return x


def _transducer(
    *, features: int, d: int, heads: int, ffn: int, layers: int, seq: int, activation: str
) -> tuple[nn.Module, tuple]:
    model = TransducerEncoder(features, d, heads, ffn, layers, seq, activation)
    return model, (torch.randn(1, seq, features),)


# -- the suite --------------------------------------------------------------------------------

SUITE: dict[str, SuiteEntry] = {
    "bert": SuiteEntry(
        "bert",
        "BERT encoder (transformers BertModel, eager attention), token ids in, hidden states out",
        {
            "full": dict(layers=8, hidden=1024, heads=16, intermediate=4096, seq=64, vocab=30522),
            "cpu": dict(layers=2, hidden=256, heads=4, intermediate=1024, seq=64, vocab=30522),
            "test": dict(layers=2, hidden=64, heads=2, intermediate=128, seq=16, vocab=1000),
        },
    ),
    "vit": SuiteEntry(
        "vit",
        "Vision Transformer (transformers ViTModel, eager attention), image in, hidden states out",
        {
            "full": dict(layers=12, hidden=768, heads=12, intermediate=3072, image=128, patch=16),
            "cpu": dict(layers=2, hidden=192, heads=3, intermediate=768, image=128, patch=16),
            "test": dict(layers=2, hidden=32, heads=2, intermediate=64, image=32, patch=8),
        },
    ),
    "resnext50": SuiteEntry(
        "resnext50",
        "ResNeXt-50 (32x4d) style CNN: bottlenecks with grouped 3x3 convs, conv+bn+relu",
        {
            "full": dict(
                stages=[3, 4, 6, 3], base=64, groups=32, width_per_group=4, image=224, classes=1000
            ),
            "cpu": dict(
                stages=[1, 2, 2, 1], base=32, groups=32, width_per_group=4, image=64, classes=100
            ),
            "test": dict(
                stages=[1, 1], base=16, groups=32, width_per_group=4, image=32, classes=10
            ),
        },
    ),
    "transducer": SuiteEntry(
        "transducer",
        "Transformer-Transducer audio encoder: post-LN layers, separate q/k/v linears",
        {
            "full": dict(
                features=80, d=512, heads=8, ffn=2048, layers=12, seq=64, activation="relu"
            ),
            "cpu": dict(features=80, d=256, heads=4, ffn=1024, layers=2, seq=64, activation="relu"),
            "test": dict(features=16, d=32, heads=2, ffn=64, layers=2, seq=8, activation="gelu"),
        },
    ),
}

_BUILDERS: dict[str, Callable[..., tuple[nn.Module, tuple]]] = {
    "bert": _bert,
    "vit": _vit,
    "resnext50": _resnext,
    "transducer": _transducer,
}


def build(name: str, size: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    """A suite model in eval mode with random weights from `seed`, and example inputs
    (batch 1). ValueError for an unknown name or size."""
    entry = SUITE.get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; the suite has: {', '.join(SUITE)}")
    if size not in entry.sizes:
        raise ValueError(f"model {name!r} has no size {size!r}; sizes: {', '.join(entry.sizes)}")
    torch.manual_seed(seed)
    model, inputs = _BUILDERS[name](**entry.sizes[size])
    return model.eval(), inputs


def load(ref: str, size: str = "cpu", seed: int = 0) -> tuple[nn.Module, tuple]:
    """A model and its example inputs: `ref` names a suite model (built at `size`), or is
    `module:function`, where `function()` returns `(model, example_inputs)`."""
    if ":" not in ref:
        if ref in SUITE:
            return build(ref, size, seed)
        raise ValueError(
            f"unknown model {ref!r}: give a suite model ({', '.join(SUITE)}) or "
            f"'module:function' returning (model, example_inputs)"
        )
    module_name, _, fn_name = ref.partition(":")
    if not module_name or not fn_name:
        raise ValueError(f"model reference {ref!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises on import
        raise ValueError(
            f"model {ref!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        what = "is not callable" if fn is not None else "does not exist"
        raise ValueError(f"model {ref!r}: {module_name}.{fn_name} {what}")
    torch.manual_seed(seed)
    try:
        result = fn()
    except Exception as exc:
        raise ValueError(f"model {ref!r}: {fn_name}() raised {type(exc).__name__}: {exc}") from exc
    if (
        not isinstance(result, tuple | list)
        or len(result) != 2
        or not isinstance(result[0], nn.Module)
        or not isinstance(result[1], tuple | list)
        or not all(isinstance(t, torch.Tensor) for t in result[1])
    ):
        raise ValueError(
            f"model {ref!r}: {fn_name}() must return (torch.nn.Module, tuple of example "
            f"input tensors), got {_describe(result)}"
        )
    model, inputs = result
    return model.eval(), tuple(inputs)


def _describe(value: object) -> str:
    if isinstance(value, tuple | list):
        inner = ", ".join(type(v).__name__ for v in value[:4])
        return f"{type(value).__name__}({inner}{', ...' if len(value) > 4 else ''})"
    return type(value).__name__
