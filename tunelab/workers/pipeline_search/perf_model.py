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
    dram_gbps: float
    smem_per_sm: int
    smem_per_block: int
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    mem_latency_clk: int = 600
    smem_latency_clk: int = 30


GPUS: dict[str, GpuSpec] = {
    "sm_80": GpuSpec(108, 1.41, 64, 1555, 164 * 1024, 163 * 1024),  # A100
    "sm_86": GpuSpec(84, 1.70, 128, 936, 100 * 1024, 99 * 1024),  # RTX 3090
    "sm_89": GpuSpec(128, 2.52, 128, 1008, 100 * 1024, 99 * 1024),  # RTX 4090
    "sm_90": GpuSpec(132, 1.83, 128, 3350, 228 * 1024, 227 * 1024),  # H100 SXM
}


def gpu_spec(arch: str | None) -> GpuSpec:
    return GPUS.get((arch or "sm_80").rstrip("a"), GPUS["sm_80"])


def estimated_registers(p: dict[str, int], dtype: str) -> int:
    """Registers per thread: accumulators, register-stage fragments, addressing."""
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
    fma = occ_eff * t["block_m"] * t["block_n"] * t["block_k"] / g.fp32_fma_per_clk
    smem_reads = occ_eff * threads * (t["thread_m"] + t["thread_n"]) * t["block_k"] * bytes_ / 128
    compute = max(fma, smem_reads)
    bw_per_sm = g.dram_gbps * 2.0 / g.sms / g.clock_ghz  # bytes/clk, ~2x from L2 reuse
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
    seconds = cycles / (g.clock_ghz * 1e9) if occ > 0 else math.inf
    return {
        "threads": threads, "smem_bytes": smem, "est_registers": regs, "occupancy": occ,
        "blocks": blocks, "waves": waves, "k_steps": k_steps, "compute_clk": compute,
        "load_clk": load, "exposed_clk": exposed, "predicted_s": seconds,
        **{f"tile_{k_}": v for k_, v in t.items()},
    }  # fmt: skip


# The CPU the measurement runs on, roughly: an AVX2/AVX-512 core with two FMA pipes.
_CPU_GHZ = 2.5
_L2_BYTES_PER_CLK = 32.0
_MEM_LATENCY_CLK = 200.0


def cpu_features(gemm: tuple[int, int, int, int], p: dict[str, int], mcpu: str | None,
                 cores: int | None = None) -> dict[str, float]:  # fmt: skip
    batch, m, n, k = gemm
    cores = cores or os.cpu_count() or 1
    lanes = 16 if mcpu and any(s in mcpu for s in ("avx512", "skylake-avx512", "icelake",
                                                   "sapphirerapids", "cascadelake", "znver4"))\
        else 8  # fmt: skip
    flops_per_clk = 2 * lanes  # two FMA pipes, fp32 lanes each
    tasks = batch * math.ceil(m / p["tile_m"]) * math.ceil(n / p["tile_n"])
    k_steps = math.ceil(k / p["tile_k"])
    acc_regs = p["micro_m"] * math.ceil(p["micro_n"] / lanes)
    frag_regs = p.get("reg_stages", 1) * (p["micro_m"] + math.ceil(p["micro_n"] / lanes))
    spill = max(0, acc_regs + frag_regs - 16)  # 16 vector registers on x86-64 (AVX2)
    compute = p["tile_m"] * p["tile_n"] * p["tile_k"] / flops_per_clk
    compute *= 1 + 0.15 * spill + 4.0 / (p["micro_m"] * p["micro_n"] / lanes)
    packed = (p["tile_m"] + p["tile_n"]) * p["tile_k"] * 4
    load = packed / _L2_BYTES_PER_CLK
    stages, reg_stages = p["stages"], p.get("reg_stages", 1)
    exposed = max(0.0, _MEM_LATENCY_CLK - (stages - 1) * max(compute, load))
    reg_wait = p["tile_k"] * (p["tile_m"] // p["micro_m"]) * (p["tile_n"] // p["micro_n"])
    reg_wait *= max(0.0, 4.0 - (reg_stages - 1) * 2.0)  # L1 load-to-use, hidden by stages
    step = max(compute, load) + exposed + reg_wait
    waves = math.ceil(tasks / cores)
    seconds = waves * k_steps * step / (_CPU_GHZ * 1e9)
    return {
        "tasks": tasks, "waves": waves, "k_steps": k_steps, "acc_regs": acc_regs,
        "spill_regs": spill, "compute_clk": compute, "load_clk": load, "exposed_clk": exposed,
        "packed_bytes": packed, "predicted_s": seconds,
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
