"""GEMM tensor programs in TVM TIR, scheduled with tiling and a software-pipeline stage count.

`C[M, N] = A[M, K] @ B[K, N]`, inputs in `dtype`, accumulation in float32. Two schedule
families: a CPU one (cache-blocked, register micro-kernel, packed operand tiles) and a CUDA
SIMT one (block and thread tiles, operand tiles staged in shared memory). In both the
operand copies inside the reduction loop are what gets pipelined: `stages` > 1 makes them
run `stages - 1` iterations ahead of the compute.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import te
from tvm.s_tir import Schedule

# The reduction loop body is [copy A tile, copy B tile, compute]: the copies are stage 0,
# the compute runs `stages - 1` iterations behind them.
_BODY_STATEMENTS = 3


def gemm_func(m: int, n: int, k: int, dtype: str, acc_dtype: str = "float32") -> Any:
    """The unscheduled GEMM PrimFunc."""
    a = te.placeholder((m, k), dtype, name="A")
    b = te.placeholder((k, n), dtype, name="B")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute(
        (m, n),
        lambda i, j: te.sum(a[i, r].astype(acc_dtype) * b[r, j].astype(acc_dtype), axis=r),
        name="C",
    )
    return te.create_prim_func([a, b, c])


def _pipeline(sch: Schedule, loop: Any, stages: int, asynchronous: bool) -> None:
    body = sch.get(loop).body
    n_stmts = len(body.seq) if hasattr(body, "seq") else 1
    if n_stmts != _BODY_STATEMENTS:  # the annotation needs one entry per statement
        raise RuntimeError(f"reduction loop body has {n_stmts} statements, expected 3")
    sch.annotate(loop, "software_pipeline_stage", [0, 0, stages - 1])
    sch.annotate(loop, "software_pipeline_order", [0, 1, 2])
    if asynchronous:
        sch.annotate(loop, "software_pipeline_async_stages", [0])


def schedule_cpu(m: int, n: int, k: int, dtype: str, p: dict[str, int]) -> Schedule:
    """Cache-blocked CPU GEMM: a (tile_m x tile_n) block per parallel task, a
    (micro_m x micro_n) register micro-kernel, A and B tiles packed per k step."""
    sch = Schedule(gemm_func(m, n, k, dtype))
    blk = sch.get_sblock("C")
    i, j, r = sch.get_loops(blk)
    i0, i1, i2 = sch.split(i, [None, p["tile_m"] // p["micro_m"], p["micro_m"]])
    j0, j1, j2 = sch.split(j, [None, p["tile_n"] // p["micro_n"], p["micro_n"]])
    k0, k1 = sch.split(r, [None, p["tile_k"]])
    sch.reorder(i0, j0, k0, i1, j1, k1, i2, j2)
    acc = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(acc, j0)
    for operand in (0, 1):
        tile = sch.cache_read(blk, operand, "local")
        sch.compute_at(tile, k0)
        sch.vectorize(sch.get_loops(tile)[-1])
    sch.unroll(i2)
    sch.vectorize(j2)
    sch.vectorize(sch.get_loops(acc)[-1])
    sch.parallel(sch.fuse(i0, j0))
    sch.decompose_reduction(blk, k0)
    if p["stages"] > 1:
        _pipeline(sch, k0, p["stages"], asynchronous=False)
    return sch


def cuda_shared_bytes(p: dict[str, int], dtype_bytes: int) -> int:
    """Shared memory one block needs: `stages` copies of the A and B tiles."""
    return max(p["stages"], 1) * (p["block_m"] + p["block_n"]) * p["block_k"] * dtype_bytes


def cuda_threads(p: dict[str, int]) -> tuple[int, int]:
    return p["block_n"] // p["thread_n"], p["block_m"] // p["thread_m"]


def schedule_cuda(m: int, n: int, k: int, dtype: str, p: dict[str, int]) -> Schedule:
    """SIMT CUDA GEMM: (block_m x block_n) per thread block, (thread_m x thread_n) per
    thread, A and B tiles staged in shared memory with `vector`-wide copies."""
    sch = Schedule(gemm_func(m, n, k, dtype))
    blk = sch.get_sblock("C")
    i, j, r = sch.get_loops(blk)
    by, ty, ti = sch.split(i, [None, p["block_m"] // p["thread_m"], p["thread_m"]])
    bx, tx, tj = sch.split(j, [None, p["block_n"] // p["thread_n"], p["thread_n"]])
    k0, k1 = sch.split(r, [None, p["block_k"]])
    sch.reorder(by, bx, ty, tx, k0, k1, ti, tj)
    sch.bind(by, "blockIdx.y")
    sch.bind(bx, "blockIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    acc = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(acc, tx)
    n_tx, n_ty = cuda_threads(p)
    # Static shared memory is capped at 48 KB per block; larger pipelines need dynamic.
    smem = cuda_shared_bytes(p, 2 if dtype == "float16" else 4)
    scope = "shared.dyn" if smem > 48 * 1024 else "shared"
    for operand in (0, 1):
        tile = sch.cache_read(blk, operand, scope)
        sch.compute_at(tile, k0)
        fused = sch.fuse(*sch.get_loops(tile)[-2:])
        _, t1, t0, vec = sch.split(fused, [None, n_ty, n_tx, p["vector"]])
        sch.bind(t1, "threadIdx.y")
        sch.bind(t0, "threadIdx.x")
        sch.vectorize(vec)
    sch.decompose_reduction(blk, k0)
    if p["stages"] > 1:
        _pipeline(sch, k0, p["stages"], asynchronous=True)
    return sch


def compile_schedule(sch: Schedule, target: tvm.target.Target) -> Any:
    """tvm.compile with asynchronous copies enabled (cp.async on sm_80+)."""
    with tvm.transform.PassContext(config={"tirx.use_async_copy": True}):
        return tvm.compile(sch.mod, target=target)
