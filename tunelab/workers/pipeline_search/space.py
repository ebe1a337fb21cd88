"""The search space: every parameter's values per target, and the candidates that fit."""

from __future__ import annotations

import itertools
from typing import Any

from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.workloads import Conv2dWorkload, GemmWorkload

CPU_SPACE: dict[str, list[int]] = {
    "tile_m": [16, 32, 64],
    "tile_n": [32, 64, 128],
    "tile_k": [16, 32],
    "micro_m": [4, 8],
    "micro_n": [8, 16],
    "stages": [1, 2, 3],
    "reg_stages": [1, 2, 4],
}
# ALCOP's dense template (REFERENCE.md 1c): 1,620 pipelined configurations (stages 2-6)
# plus the same space unpipelined (stages 1, reg_stages 1), the vanilla-TVM baseline.
CUDA_SPACE: dict[str, list[int]] = {
    "block_row_warps": [1, 2, 4],
    "block_col_warps": [1, 2, 4],
    "warp_row_tiles": [1, 2, 4],
    "warp_col_tiles": [1, 2],
    "chunk": [2, 4],
    "stages": [1, 2, 3, 4, 5, 6],
    "reg_stages": [1, 2, 4],
    # 1: wmma on tensor cores (fp16 inputs only), 0: SIMT. Default: by the input dtype.
    "tensor_core": [0, 1],
}


def parameters(target_kind: str) -> dict[str, list[int]]:
    """The full space of a target kind (`cuda` or `llvm`): each parameter's values."""
    return CUDA_SPACE if target_kind == "cuda" else CPU_SPACE


def _base_space(spec: JobSpec) -> dict[str, list[int]]:
    base = parameters(spec.target.kind)
    overrides = {k: v for k, v in spec.space.items() if v is not None}
    if spec.target.kind == "cuda" and "tensor_core" not in overrides:
        overrides["tensor_core"] = [1] if spec.workload.get("dtype") == "float16" else [0]
    return {name: overrides.get(name, values) for name, values in base.items()}


def _fits(wl: GemmWorkload | Conv2dWorkload, p: dict[str, int], cuda: bool) -> bool:
    """Tiles divide N and K (M may be ragged for conv2d: its rows are predicated)."""
    _, m, n, k = wl.gemm_shape()
    if cuda:
        from tunelab.workers.pipeline_search.schedules import cuda_tiles

        t = cuda_tiles(p)
        bm, bn, bk = t["block_m"], t["block_n"], t["block_k"]
    else:
        bm, bn, bk = p["tile_m"], p["tile_n"], p["tile_k"]
        if bm % p["micro_m"] or bn % p["micro_n"]:
            return False
    # conv2d's rows may be ragged (predicated) on SIMT; wmma works on whole 16x16 tiles.
    ragged_m = isinstance(wl, Conv2dWorkload) and m > bm and not p.get("tensor_core")
    return (m % bm == 0 or ragged_m) and n % bn == 0 and k % bk == 0


def candidates(spec: JobSpec, wl: GemmWorkload | Conv2dWorkload) -> list[dict[str, Any]]:
    """Every candidate of the spec's (restricted) space whose tiles fit the workload, in
    the space's fixed order."""
    base = _base_space(spec)
    names = list(base)
    cuda = spec.target.kind == "cuda"
    out = []
    for values in itertools.product(*(base[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        if _fits(wl, params, cuda):
            out.append(params)
    return out
