"""Schedules of the GEMM-shaped workloads, and their pipelining.

Each schedule tiles the (batch?, m, n, k) nest and stages the operand tiles at two
levels: per k-tile (`k0`) into fast memory (CUDA shared memory; a packed local tile on
the CPU), and per k-step (`k1`) into registers. It annotates nothing itself: `pipeline`
runs the detection analysis on the scheduled program and derives the annotations from
what it finds, with `stages` for the outer level and `reg_stages` for the inner one.

CUDA parameters are ALCOP's dense template's (REFERENCE.md 1c): a block of
block_row_warps x block_col_warps warps, each warp computing warp_row_tiles x
warp_col_tiles 16x16 tiles, a k-tile of chunk*16. With `tensor_core` each 16x16x16 step is
a wmma instruction on fp16 fragments; on SIMT a warp's 32 threads are laid out 4x8, so a
thread computes (4*warp_row_tiles) x (2*warp_col_tiles) outputs.
"""

from __future__ import annotations

from typing import Any

from tunelab.workers.pipeline_search.detection import Pipelinable, detect
from tunelab.workers.pipeline_search.transform import apply_pipelining
from tunelab.workers.pipeline_search.workloads import Conv2dWorkload, GemmWorkload, tensor_program

DTYPE_BYTES = {"float16": 2, "float32": 4}
STATIC_SMEM_LIMIT = 48 * 1024  # above this a block must use dynamic shared memory


def _stage(sch: Any, blk: Any, operand: int, scope: str) -> Any:
    """A block that copies GEMM operand `operand` into `scope`, ready for compute_at.

    A plain GEMM reads its inputs directly: cache them. Conv2d's operands are the
    im2col and filter views computed by blocks `A` and `B`: store those in `scope`
    instead, so each tile is formed from the input as it is staged (implicit GEMM).
    """
    name = "AB"[operand]
    producer = [b for b in sch.get_producers(blk) if sch.get(b).name_hint == name]
    if producer:
        sch.set_scope(producer[0], 0, scope)
        return producer[0]
    return sch.cache_read(blk, operand, scope)


def cuda_tiles(p: dict[str, int]) -> dict[str, int]:
    """Block, thread and k tiles of an ALCOP parameter set."""
    return {
        "block_m": p["block_row_warps"] * p["warp_row_tiles"] * 16,
        "block_n": p["block_col_warps"] * p["warp_col_tiles"] * 16,
        "block_k": p["chunk"] * 16,
        "threads_y": p["block_row_warps"] * 4,
        "threads_x": p["block_col_warps"] * 8,
        "thread_m": p["warp_row_tiles"] * 4,
        "thread_n": p["warp_col_tiles"] * 2,
    }


def cuda_shared_bytes(p: dict[str, int], dtype: str) -> int:
    """Shared memory one block needs: `stages` copies of the A and B tiles."""
    t = cuda_tiles(p)
    return p["stages"] * (t["block_m"] + t["block_n"]) * t["block_k"] * DTYPE_BYTES[dtype]


def cuda_vector(p: dict[str, int], dtype: str) -> int:
    """Elements per copy instruction: up to 16 bytes, as many as the tiles split into."""
    t = cuda_tiles(p)
    threads = t["threads_x"] * t["threads_y"]
    vec = 16 // DTYPE_BYTES[dtype]
    while vec > 1 and any(
        elems % (threads * vec)
        for elems in (t["block_m"] * t["block_k"], t["block_k"] * t["block_n"])
    ):
        vec //= 2
    return vec


def _bind_blocks(sch: Any, batch: list[Any], by: Any, bx: Any) -> None:
    if batch:
        sch.bind(batch[0], "blockIdx.z")
    sch.bind(by, "blockIdx.y")
    sch.bind(bx, "blockIdx.x")


def _shared_tiles(
    sch: Any, blk: Any, at: Any, wl: GemmWorkload | Conv2dWorkload, p: dict[str, int],
    threads: list[tuple[int, str]],
) -> None:  # fmt: skip
    """Stage both operand tiles in shared memory at loop `at`, each copy spread over the
    block's `threads` ((extent, threadIdx axis), outermost first) in vectors of up to
    16 bytes; dynamic shared memory when the stages would pass the static limit."""
    scope = "shared.dyn" if cuda_shared_bytes(p, wl.dtype) > STATIC_SMEM_LIMIT else "shared"
    vec = cuda_vector(p, wl.dtype)
    for operand in (0, 1):
        tile = _stage(sch, blk, operand, scope)
        sch.compute_at(tile, at)
        fused = sch.fuse(*sch.get_loops(tile)[-2:])
        *bound, v = sch.split(fused, [None, *(n for n, _ in threads), vec])[1:]
        for loop, (_, axis) in zip(bound, threads, strict=True):
            sch.bind(loop, axis)
        sch.vectorize(v)


def schedule_cuda(wl: GemmWorkload | Conv2dWorkload, p: dict[str, int]) -> Any:
    """The CUDA schedule of `p`: tensor cores (wmma) when `tensor_core` is 1, else SIMT."""
    if p.get("tensor_core"):
        return schedule_tensor_core(wl, p)
    return schedule_simt(wl, p)


def schedule_tensor_core(wl: GemmWorkload | Conv2dWorkload, p: dict[str, int]) -> Any:
    """ALCOP's dense template on tensor cores: each warp computes warp_row_tiles x
    warp_col_tiles 16x16 tiles with wmma (fp16 inputs, fp32 accumulators), operand tiles
    staged in shared memory per k-tile and loaded into wmma fragments per 16-deep k-step.
    Warps are threadIdx.y (rows) x threadIdx.z (columns); threadIdx.x is the warp's lanes."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.tensor_intrin import cuda as intrin

    brw, bcw = p["block_row_warps"], p["block_col_warps"]
    sch = Schedule(tensor_program(wl))
    blk = sch.get_sblock("C")
    *batch, i, j, r = sch.get_loops(blk)
    by, wy, wi, ii = sch.split(i, [None, brw, p["warp_row_tiles"], 16])
    bx, wz, wj, jj = sch.split(j, [None, bcw, p["warp_col_tiles"], 16])
    k0, k1, kk = sch.split(r, [None, p["chunk"], 16])
    sch.reorder(*batch, by, bx, wy, wz, k0, k1, wi, wj, ii, jj, kk)
    _bind_blocks(sch, batch, by, bx)
    sch.bind(wy, "threadIdx.y")
    sch.bind(wz, "threadIdx.z")
    acc = sch.cache_write(blk, 0, "wmma.accumulator")
    sch.reverse_compute_at(acc, wz)
    warps = [(brw, "threadIdx.y"), (bcw, "threadIdx.z"), (32, "threadIdx.x")]
    _shared_tiles(sch, blk, k0, wl, p, warps)
    frag_a = sch.cache_read(blk, 0, "wmma.matrix_a")
    frag_b = sch.cache_read(blk, 1, "wmma.matrix_b")
    for frag in (frag_a, frag_b):
        sch.compute_at(frag, k1)
    init = sch.decompose_reduction(blk, k0)
    dyn = "_DYN" if cuda_shared_bytes(p, wl.dtype) > STATIC_SMEM_LIMIT else ""
    sch.tensorize(ii, intrin.WMMA_SYNC_16x16x16_f16f16f32_INTRIN)
    sch.tensorize(sch.get_loops(init)[-2], intrin.WMMA_FILL_16x16x16_F32_INTRIN)
    rows, _ = sch.get_loops(frag_a)[-2:]
    sch.tensorize(
        sch.split(rows, [None, 16])[1], getattr(intrin, f"WMMA_LOAD_16x16x16_F16_A{dyn}_INTRIN")
    )
    rows, cols = sch.get_loops(frag_b)[-2:]
    outer, inner = sch.split(cols, [None, 16])
    sch.reorder(outer, rows, inner)
    sch.tensorize(rows, getattr(intrin, f"WMMA_LOAD_16x16x16_F16_B{dyn}_INTRIN"))
    rows, cols = sch.get_loops(acc)[-2:]
    r0, r1 = sch.split(rows, [None, 16])
    c0, c1 = sch.split(cols, [None, 16])
    sch.reorder(r0, c0, r1, c1)
    sch.tensorize(r1, intrin.WMMA_STORE_16x16x16_F32_GLOBAL_INTRIN)
    return sch


def schedule_simt(wl: GemmWorkload | Conv2dWorkload, p: dict[str, int]) -> Any:
    """SIMT CUDA schedule with operand tiles in shared memory and fragments in registers."""
    from tvm.s_tir import Schedule

    t = cuda_tiles(p)
    sch = Schedule(tensor_program(wl))
    blk = sch.get_sblock("C")
    *batch, i, j, r = sch.get_loops(blk)
    by, ty, ti = sch.split(i, [None, t["threads_y"], t["thread_m"]])
    bx, tx, tj = sch.split(j, [None, t["threads_x"], t["thread_n"]])
    k0, k1 = sch.split(r, [None, t["block_k"]])
    sch.reorder(*batch, by, bx, ty, tx, k0, k1, ti, tj)
    _bind_blocks(sch, batch, by, bx)
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    acc = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(acc, tx)
    threads = [(t["threads_y"], "threadIdx.y"), (t["threads_x"], "threadIdx.x")]
    _shared_tiles(sch, blk, k0, wl, p, threads)
    for operand in (0, 1):
        frag = sch.cache_read(blk, operand, "local")
        sch.compute_at(frag, k1)
    sch.decompose_reduction(blk, k0)
    return sch


def schedule_cpu(wl: GemmWorkload | Conv2dWorkload, p: dict[str, int]) -> Any:
    """Cache-blocked CPU schedule: a (tile_m x tile_n) block per parallel task, packed
    A and B tiles per k-tile, (micro_m x micro_n) register micro-kernel fed by register
    fragments per k-step."""
    from tvm.s_tir import Schedule

    sch = Schedule(tensor_program(wl))
    blk = sch.get_sblock("C")
    *batch, i, j, r = sch.get_loops(blk)
    i0, i1, i2 = sch.split(i, [None, p["tile_m"] // p["micro_m"], p["micro_m"]])
    j0, j1, j2 = sch.split(j, [None, p["tile_n"] // p["micro_n"], p["micro_n"]])
    k0, k1 = sch.split(r, [None, p["tile_k"]])
    sch.reorder(*batch, i0, j0, k0, i1, j1, k1, i2, j2)
    acc = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(acc, j0)
    for operand in (0, 1):
        tile = _stage(sch, blk, operand, "local")
        sch.compute_at(tile, k0)
        sch.vectorize(sch.get_loops(tile)[-1])
    for operand in (0, 1):
        frag = sch.cache_read(blk, operand, "local")
        sch.compute_at(frag, k1)
        # The B fragment is one row of micro_n values: a vector load; the A fragment is
        # micro_m broadcasts. Left as scalar loops they cost ~10% on micro_n = 32.
        (sch.vectorize if operand else sch.unroll)(sch.get_loops(frag)[-1])
    sch.unroll(i2)
    sch.vectorize(j2)
    sch.vectorize(sch.get_loops(acc)[-1])
    sch.parallel(sch.fuse(*batch, i0, j0))
    sch.decompose_reduction(blk, k0)
    return sch


def pipeline(sch: Any, p: dict[str, int], *, asynchronous: bool) -> list[dict[str, Any]]:
    """Detect the pipelinable buffers of `sch` and pipeline them: `stages` for buffers
    staged from global memory, `reg_stages` for those staged from a staged buffer.
    Returns what was pipelined (buffer, level, stages, async), as trials record it."""
    found = detect(sch.mod)

    def stages_for(b: Pipelinable) -> int:
        return p["stages"] if b.level.startswith("global") else p.get("reg_stages", 1)

    return apply_pipelining(sch, found, stages_for, asynchronous=asynchronous)


def compile_schedule(sch: Any, target: Any) -> Any:
    """tvm.compile with asynchronous copies enabled (cp.async on sm_80+)."""
    import tvm

    with tvm.transform.PassContext(config={"tirx.use_async_copy": True}):
        return tvm.compile(sch.mod, target=target)
