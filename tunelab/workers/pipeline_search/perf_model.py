"""Analytical performance model of a pipelined GEMM-shaped kernel (ALCOP's third obstacle).

It predicts seconds from the schedule parameters alone, before anything is built:
occupancy from shared memory, registers and threads; per k-step load time (bytes over
the device's bandwidth share) and compute time (FMAs over its throughput share); the
memory latency that `stages - 1` loads in flight (and other resident blocks) hide; and
waves of blocks over the multiprocessors. The CPU variant reads "core" for SM and a
packed tile for a shared-memory tile. The numbers are coarse on purpose: the XGBoost
cost model takes this prediction as one feature and learns the rest from measurements.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from tunelab.workers.pipeline_search.schedules import DTYPE_BYTES, cuda_shared_bytes, cuda_tiles


@dataclass(frozen=True)
class GpuSpec:
    sms: int
    clock_ghz: float
    fp32_fma_per_clk: int  # per SM
    tc_fma_per_clk: int  # per SM, fp16 inputs with fp32 accumulation on tensor cores
    dram_gbps: float
    l2_gbps: float  # operand tiles are re-read by many blocks: mostly L2 hits
    smem_per_sm: int
    smem_per_block: int
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    mem_latency_clk: int = 600
    smem_latency_clk: int = 30


GPUS: dict[str, GpuSpec] = {
    "sm_80": GpuSpec(108, 1.41, 64, 1024, 1555, 5120, 164 * 1024, 163 * 1024),  # A100
    "sm_86": GpuSpec(84, 1.70, 128, 256, 936, 2500, 100 * 1024, 99 * 1024),  # RTX 3090
    "sm_89": GpuSpec(128, 2.52, 128, 256, 1008, 5000, 100 * 1024, 99 * 1024),  # RTX 4090
    "sm_90": GpuSpec(132, 1.83, 128, 2048, 3350, 10000, 228 * 1024, 227 * 1024),  # H100 SXM
}


def gpu_spec(arch: str | None) -> GpuSpec:
    return GPUS.get((arch or "sm_80").rstrip("a"), GPUS["sm_80"])


def estimated_registers(p: dict[str, int], dtype: str) -> int:
    """Registers per thread: accumulators, register-stage fragments, addressing."""
    if p.get("tensor_core"):  # a 16x16 tile is 8 values per lane: fp32 8 regs, fp16 4
        acc = p["warp_row_tiles"] * p["warp_col_tiles"] * 8
        return acc + p.get("reg_stages", 1) * (p["warp_row_tiles"] + p["warp_col_tiles"]) * 4 + 32
    t = cuda_tiles(p)
    frag = p.get("reg_stages", 1) * (t["thread_m"] + t["thread_n"]) * DTYPE_BYTES[dtype] / 4
    return int(t["thread_m"] * t["thread_n"] + math.ceil(frag) + 32)


def cuda_features(gemm: tuple[int, int, int, int], p: dict[str, int], dtype: str,
                  arch: str | None) -> dict[str, float]:  # fmt: skip
    """Derived quantities of one CUDA candidate, and the predicted seconds."""
    g = gpu_spec(arch)
    batch, m, n, k = gemm
    t = cuda_tiles(p)
    threads = t["threads_x"] * t["threads_y"]
    smem = cuda_shared_bytes(p, dtype)
    regs = estimated_registers(p, dtype)
    occ = min(
        g.max_blocks_per_sm,
        g.max_threads_per_sm // threads,
        g.smem_per_sm // max(smem, 1),
        g.regs_per_sm // max(regs * threads, 1),
    )
    blocks = batch * math.ceil(m / t["block_m"]) * math.ceil(n / t["block_n"])
    k_steps = math.ceil(k / t["block_k"])
    bytes_ = DTYPE_BYTES[dtype]
    occ_eff = max(occ, 1)
    # Per k-step of all blocks resident on one SM, in cycles.
    rate = g.tc_fma_per_clk if p.get("tensor_core") else g.fp32_fma_per_clk
    fma = occ_eff * t["block_m"] * t["block_n"] * t["block_k"] / rate
    if p.get("tensor_core"):  # each warp reads its A rows and B columns of the k-tile
        warps = p["block_row_warps"] * p["block_col_warps"]
        per_warp = (p["warp_row_tiles"] + p["warp_col_tiles"]) * 16 * t["block_k"]
        smem_reads = occ_eff * warps * per_warp * bytes_ / 128
    else:
        smem_reads = (
            occ_eff * threads * (t["thread_m"] + t["thread_n"]) * t["block_k"] * bytes_ / 128
        )
    compute = max(fma, smem_reads)
    bw_per_sm = g.l2_gbps / g.sms / g.clock_ghz  # bytes per clock
    unique = batch * (m * k + k * n) * bytes_ + batch * m * n * 4  # each byte once, from DRAM
    load = occ_eff * (t["block_m"] + t["block_n"]) * t["block_k"] * bytes_ / bw_per_sm
    busy = max(compute, load)
    stages, reg_stages = p["stages"], p.get("reg_stages", 1)
    exposed = max(0.0, g.mem_latency_clk - (stages - 1) * busy - (occ_eff - 1) * compute / occ_eff)
    # Without register stages each k1 step waits on shared memory once.
    smem_wait = t["block_k"] * max(0.0, g.smem_latency_clk - (reg_stages - 1) * fma / t["block_k"])
    step = busy + exposed + smem_wait / occ_eff
    waves = math.ceil(blocks / (g.sms * occ_eff))
    prologue = (stages - 1) * load + g.mem_latency_clk
    cycles = waves * (k_steps * step + prologue)
    seconds = max(cycles / (g.clock_ghz * 1e9), unique / (g.dram_gbps * 1e9))
    seconds = seconds if occ > 0 else math.inf
    return {
        "threads": threads, "smem_bytes": smem, "est_registers": regs, "occupancy": occ,
        "blocks": blocks, "waves": waves, "k_steps": k_steps, "compute_clk": compute,
        "load_clk": load, "exposed_clk": exposed, "predicted_s": seconds,
        **{f"tile_{k_}": v for k_, v in t.items()},
    }  # fmt: skip


# The CPU the measurement runs on, roughly: an out-of-order x86-64 core with two FMA
# pipes, 32 KB of L1 data cache and hardware prefetchers.
_CPU_GHZ = 2.5
_L1_BYTES = 32 * 1024
_FMA_LATENCY = 4
_VECTOR_REGISTERS = 16


def cpu_features(gemm: tuple[int, int, int, int], p: dict[str, int], mcpu: str | None,
                 cores: int | None = None) -> dict[str, float]:  # fmt: skip
    """The same model read for a CPU core. Unlike a GPU, an out-of-order core with
    hardware prefetch already overlaps the streaming loads with the arithmetic, so
    software pipelining hides little here; what it costs is modelled instead: more
    packed-tile copies live at once (L1 pressure) and, at the register level, fragments
    rotated through a stack array (a store and a load per element per k-step)."""
    batch, m, n, k = gemm
    cores = cores or os.cpu_count() or 1
    avx512 = ("avx512", "skylake-avx512", "icelake", "sapphirerapids", "cascadelake", "znver4")
    lanes = 16 if mcpu and any(s in mcpu for s in avx512) else 8
    tm, tn, tk, mm, mn = p["tile_m"], p["tile_n"], p["tile_k"], p["micro_m"], p["micro_n"]
    stages, reg_stages = p["stages"], p.get("reg_stages", 1)
    tasks = batch * math.ceil(m / tm) * math.ceil(n / tn)
    k_steps = math.ceil(k / tk)
    micro_tiles = (tm // mm) * (tn // mn)
    acc_regs = mm * math.ceil(mn / lanes)
    spill = max(0, acc_regs + math.ceil(mn / lanes) + 1 - _VECTOR_REGISTERS)
    # FMAs over two pipes; fewer independent accumulators than pipes x latency stall.
    fma = tm * tn * tk / (2 * lanes)
    compute = fma * max(1.0, 2 * _FMA_LATENCY / acc_regs) * (1 + 0.25 * spill)
    # Packing A and B tiles each k-step: a vector load and store per `lanes` floats.
    pack = 2 * (tm + tn) * tk / lanes
    working = stages * (tm + tn) * tk * 4 + tm * tn * 4
    l1_penalty = 1.0 + 0.3 * max(0.0, working / _L1_BYTES - 1.0)
    reg_copies = 0.0
    if reg_stages > 1:
        reg_copies = 2.0 * tk * micro_tiles * (mm + math.ceil(mn / lanes))
    step = (compute + pack) * l1_penalty + reg_copies
    waves = math.ceil(tasks / cores)
    seconds = waves * k_steps * step / (_CPU_GHZ * 1e9)
    return {
        "tasks": tasks, "waves": waves, "k_steps": k_steps, "acc_regs": acc_regs,
        "spill_regs": spill, "compute_clk": compute, "pack_clk": pack,
        "working_set_bytes": working, "reg_copy_clk": reg_copies, "predicted_s": seconds,
    }  # fmt: skip


def features(
    gemm: tuple[int, int, int, int], p: dict[str, Any], dtype: str, target: Any
) -> dict[str, float]:
    """The model's view of a candidate: its parameters, derived quantities, prediction."""
    derived = (
        cuda_features(gemm, p, dtype, target.arch)
        if target.kind == "cuda"
        else cpu_features(gemm, p, target.mcpu)
    )
    return {**{k: float(v) for k, v in p.items()}, **derived}
