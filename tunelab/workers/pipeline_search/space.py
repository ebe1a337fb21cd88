"""The search space: every parameter's values per target, and the candidates that fit."""

from __future__ import annotations

import itertools
from typing import Any

from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.workloads import Conv2dWorkload, GemmWorkload

# Measured on a Zen 4 core: 8x16 and 4x32 micro-kernels (8 vector accumulators) are the
# fastest once the cache tiles are large enough (128-256) to amortise packing (the best
# found reach 78-86% of the FMA peak, bench/results/cpu_peak.txt); 12 accumulators run
# 3x slower there. 16-wide rows are one AVX-512 vector or two AVX2 ones.
# On the CPU a fragment rotated through more than two register stages only adds copies.
CPU_SPACE: dict[str, list[int]] = {
    "tile_m": [32, 64, 128, 256],
    "tile_n": [64, 128, 256],
    "tile_k": [32, 64, 128, 256],
    "micro_m": [4, 8],
    "micro_n": [16, 32],
    "stages": [1, 2, 3],
    "reg_stages": [1, 2],
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


INT32_MAX = 2**31 - 1


def size_problems(wl: GemmWorkload | Conv2dWorkload) -> str | None:
    """Why TVM cannot build this workload at all (its buffers are indexed with int32), as
    `workload.FIELD: reason`; None if it can."""
    batch, m, n, k = wl.gemm_shape()
    field = "M" if isinstance(wl, GemmWorkload) else "batch"
    for name, elements in (("A", batch * m * k), ("B", batch * k * n), ("C", batch * m * n)):
        if elements > INT32_MAX:
            return (
                f"workload.{field}: {name} would have {elements:,} elements, past the "
                f"{INT32_MAX:,} a kernel can index (int32): shrink the workload"
            )
    return None


def bytes_needed(wl: GemmWorkload | Conv2dWorkload) -> int:
    """Memory a measurement holds: inputs, output and the reference output."""
    batch, m, n, k = wl.gemm_shape()
    width = 2 if wl.dtype == "float16" else 4
    return batch * (m * k + k * n) * width + 2 * batch * m * n * 4


def why_nothing_fits(spec: JobSpec, wl: GemmWorkload | Conv2dWorkload) -> str:
    """Which dimension no tile of the (restricted) space divides, as `workload.FIELD:
    reason` (the message of a space with no candidate)."""
    base = _base_space(spec)
    _, m, n, k = wl.gemm_shape()
    fields = {"M": "M", "N": "N", "K": "K"}
    if isinstance(wl, Conv2dWorkload):
        fields = {"M": "batch, H, W", "N": "K", "K": "R, S, C"}
    if spec.target.kind == "cuda":
        return (
            f"workload.{fields['N'].split(',')[0]}: no block tile of the space divides the "
            f"GEMM ({m}x{n}x{k}); widen space or pick multiples of 16"
        )
    for dim, size, tiles in (("M", m, base["tile_m"]), ("N", n, base["tile_n"]),
                             ("K", k, base["tile_k"])):  # fmt: skip
        if dim == "M" and isinstance(wl, Conv2dWorkload):
            continue  # ragged rows are predicated
        if not any(size % t == 0 for t in tiles):
            tname = f"tile_{dim.lower()}"
            return (
                f"workload.{fields[dim].split(',')[0]}: {dim}={size} is not a multiple of "
                f"any {tname} ({', '.join(map(str, tiles))}): no candidate fits; make it a "
                f"multiple of {min(tiles)} or set space.{tname}"
            )
    return "space: no candidate's tiles fit the workload (micro tiles must divide tiles)"
