"""Run an IR graph again as PyTorch, and compare results.

`Executable` prepares a graph once (folds the nodes computed from weights only, lays the
values out in slots, works out when each value is last read) so that calling it, which
timing loops do thousands of times, is a plain loop over operator functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tunelab.workers.graphs.ir import Graph, GraphError
from tunelab.workers.graphs.ops import OPS, run_node

_FLOAT = {"float16", "bfloat16", "float32", "float64"}


class Executable:
    """A graph ready to run on `device`: `executable(inputs) -> outputs`."""

    def __init__(self, graph: Graph, constants: dict[str, torch.Tensor], device: str = "cpu"):
        for n in graph.nodes:
            if n.op not in OPS:
                raise GraphError(f"unknown operator {n.op!r} (node {n.name})")
        missing = [c for c in graph.constants if c not in constants]
        if missing:
            raise GraphError(f"no value for constants {missing[:5]}")
        self.graph = graph
        self.device = torch.device(device)

        # Fold weight preparation once.
        folded = graph.constant_nodes()
        known: dict[str, torch.Tensor] = {c: constants[c].to(self.device) for c in graph.constants}
        with torch.no_grad():
            for n in graph.nodes:
                if n.name in folded:
                    outs = run_node(n, [known[v] for v in n.inputs])
                    known.update(zip(n.outputs, outs, strict=True))
        steps = [n for n in graph.nodes if n.name not in folded]

        # Slots: the known values the remaining nodes and outputs read, then the inputs,
        # then node outputs.
        read = {v for n in steps for v in n.inputs} | set(graph.outputs)
        slot: dict[str, int] = {}
        base: list[Any] = []
        for v, t in known.items():
            if v in read:
                slot[v] = len(base)
                base.append(t)
        self._input_slots = []
        for v in graph.inputs:
            slot[v] = len(base)
            self._input_slots.append(len(base))
            base.append(None)
        for n in steps:
            for v in n.outputs:
                slot[v] = len(base)
                base.append(None)
        self._base = base

        # Free a value after its last read (never a known value or a graph output).
        last: dict[str, int] = {}
        for i, n in enumerate(steps):
            for v in n.inputs:
                last[v] = i
        keep = set(known) | set(graph.outputs)
        frees: list[list[int]] = [[] for _ in steps]
        for v, i in last.items():
            if v not in keep:
                frees[i].append(slot[v])
        self._steps = [
            (OPS[n.op], n.attrs, [slot[v] for v in n.inputs], [slot[v] for v in n.outputs], f)
            for n, f in zip(steps, frees, strict=True)
        ]
        self._outputs = [slot[v] for v in graph.outputs]

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The graph's outputs on `inputs` (in `graph.inputs` order)."""
        if len(inputs) != len(self._input_slots):
            raise ValueError(
                f"{len(inputs)} inputs given, the graph takes {len(self._input_slots)}"
            )
        vals = list(self._base)
        device = self.device
        for i, x in zip(self._input_slots, inputs, strict=True):
            vals[i] = x if x.device == device else x.to(device)
        with torch.no_grad():
            for fn, attrs, ins, outs, frees in self._steps:
                results = fn([vals[i] for i in ins], attrs)
                for i, r in zip(outs, results, strict=True):
                    vals[i] = r
                for i in frees:
                    vals[i] = None
        return [vals[i] for i in self._outputs]


def run(
    graph: Graph, constants: dict[str, torch.Tensor], inputs: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Execute `graph` once on `inputs` (CPU)."""
    return Executable(graph, constants)(inputs)


def random_inputs(
    graph: Graph, seed: int, like: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Fresh inputs for `graph`: floats ~ N(0, 1); integers (token ids) drawn uniformly in
    the range of the matching example input in `like`, or in [0, 100) without one."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, v in enumerate(graph.inputs):
        t = graph.types[v]
        dtype = getattr(torch, t.dtype)
        if t.dtype in _FLOAT:
            out.append(torch.randn(t.shape, generator=gen).to(dtype))
        elif t.dtype == "bool":
            out.append(torch.randint(0, 2, t.shape, generator=gen).to(torch.bool))
        else:
            low, high = 0, 100
            if like is not None and like[i].numel():
                low, high = int(like[i].min()), int(like[i].max()) + 1
            out.append(torch.randint(low, high, t.shape, generator=gen, dtype=dtype))
    return out


def compare(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], rtol: float = 1e-3, atol: float = 1e-4
) -> str | None:
    """None if every `a[i]` is close to `b[i]` (|a - b| <= atol + rtol |b|), else what
    differs: the output index, the largest difference and where it is."""
    if len(a) != len(b):
        return f"{len(a)} outputs, expected {len(b)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if tuple(x.shape) != tuple(y.shape):
            return f"output {i}: shape {tuple(x.shape)}, expected {tuple(y.shape)}"
        x64 = x.detach().to("cpu", torch.float64)
        y64 = y.detach().to("cpu", torch.float64)
        close = torch.isclose(x64, y64, rtol=rtol, atol=atol, equal_nan=True)
        if bool(close.all()):
            continue
        diff = (x64 - y64).abs().nan_to_num(nan=float("inf")).masked_fill(close, 0.0)
        flat = int(diff.argmax())
        where = tuple(int(k) for k in torch.unravel_index(torch.tensor(flat), x.shape))
        bad = int((~close).sum())
        return (
            f"output {i}: max abs difference {float(diff.flatten()[flat]):.4g} at index "
            f"{list(where)} (got {float(x64.flatten()[flat]):.6g}, expected "
            f"{float(y64.flatten()[flat]):.6g}); {bad} of {x.numel()} elements differ beyond "
            f"rtol={rtol:g}, atol={atol:g}"
        )
    return None
