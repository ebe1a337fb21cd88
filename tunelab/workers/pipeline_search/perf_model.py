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
from dataclasses import dataclass
from typing import Any

from tunelab.workers.pipeline_search.calibrate import CpuMachine, local_machine
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


# What the CPU template costs beyond the calibrated machine (calibrate.py), in cycles of
# one core. Measured on Zen 4 with TVM 0.27's LLVM (512^3, one thread, best of 30 runs,
# and the 2-thread exhaustive sweep): with reg_stages 1 and stages 1 every micro-kernel
# and tile of 64-256 is within ~5% of the others (~95% of the FMA peak); register stages
# cost 1.5-1.9x (accumulators go through memory each k-step); outer stages cost 1.1-1.5x
# with 8-row micro-kernels, growing with the packed tiles, and nothing with 4-row ones;
# 32-row tiles lose 10-20% to repacking B; conv2d rows past M that do not fill a micro
# tile keep a per-row predicate inside the micro-kernel (3x).
_LOAD_PORTS = 2  # vector loads per cycle
_COPY_CYCLES = 4.0  # a packed vector: load, store (two cycles for 64 bytes), indexing
_IM2COL = 3.0  # conv2d's A tile is gathered (index arithmetic, predicates), not copied
_ACC_CYCLES = 1.0  # an accumulator vector loaded and stored back once per k-tile
_REG_STAGE_CYCLES = 0.8  # per accumulator per k-step with fragments rotated on the stack
_STAGE_STREAMS = 8  # operand streams (micro rows + B vectors) the prefetchers follow
_STAGE_PENALTY = 0.15  # per doubling of the staged tiles past L1, past those streams
_PREDICATED = 3.0  # conv2d rows past M inside a micro tile: a predicate per row
_MICRO_SETUP = 4.0  # loop and address set-up per micro-tile and k-tile


def cpu_features(
    gemm: tuple[int, int, int, int], p: dict[str, int], machine: CpuMachine,
    threads: int | None = None, im2col: bool = False,
) -> dict[str, float]:  # fmt: skip
    """The model read for CPU cores, from the measuring node's calibration (`machine`)
    and the measurement's thread count (`threads`; else the node's measuring threads).

    Each of `tasks` (tile_m x tile_n blocks, handed out in static chunks over the
    threads: `waves` rounds) runs k_steps k-tiles. Per k-tile it packs its A and B tiles
    (vector copies, conv2d's A gathered; from memory at the copy bandwidth when the
    operands do not fit the last-level cache), and for each micro-tile reloads its
    accumulators from the C tile, then runs tile_k k-steps of micro_m x micro_n / lanes
    vector FMAs. A k-step takes the longest of the FMAs over the core's FMA rate, the FMA
    latency (fewer accumulators than latency x rate: latency-bound) and the operand
    loads; accumulators and operands past the vector registers spill. Register stages
    send the accumulators through memory every k-step; outer stages, with more operand
    streams than the prefetchers follow, stall on the staged tiles' extra bytes; a
    working set past L2 slows the micro-kernel. All cores run at the calibrated
    all-core scaling."""
    batch, m, n, k = gemm
    threads = threads or machine.threads or machine.cores
    lanes, bytes_ = machine.lanes, 4
    tm, tn, tk, mm, mn = p["tile_m"], p["tile_n"], p["tile_k"], p["micro_m"], p["micro_n"]
    tasks = batch * math.ceil(m / tm) * math.ceil(n / tn)
    waves = math.ceil(tasks / threads)
    k_steps = math.ceil(k / tk)
    # A single k-tile has no loop to pipeline: its stages are never applied.
    stages, reg_stages = min(p["stages"], k_steps), p.get("reg_stages", 1)
    micro_tiles = math.ceil(tm / mm) * math.ceil(tn / mn)
    b_vectors = math.ceil(mn / lanes)
    acc_regs = mm * b_vectors
    fma_rate = max(machine.flops_per_cycle / (2 * lanes), 1e-3)  # vector FMAs per cycle
    spill = max(0, acc_regs + b_vectors + 1 - machine.vector_registers)
    # One k-step of one micro-tile.
    fma = acc_regs / fma_rate
    loads = (mm + b_vectors) / _LOAD_PORTS
    k_step = max(fma, machine.fma_latency, loads) + 2.0 * spill
    latency_bound = machine.fma_latency / max(fma, loads)
    reg_copy = _REG_STAGE_CYCLES * acc_regs if reg_stages > 1 else 0.0
    k_step += reg_copy
    if m % tm and m % mm:
        k_step *= _PREDICATED
    # Caches: the packed tiles and the C tile against L1 and L2.
    staged = stages * (tm + tn) * tk * bytes_
    working = staged + tm * tn * bytes_
    l2_miss = max(0.0, min(1.0, working / machine.l2_bytes - 1.0))
    stage_stall = 0.0
    if stages > 1 and reg_stages == 1 and mm + b_vectors > _STAGE_STREAMS:
        stage_stall = _STAGE_PENALTY * math.log2(max(1.0, staged / machine.l1d_bytes))
    k_step *= (1.0 + stage_stall) * (1.0 + 0.5 * l2_miss)
    compute = micro_tiles * tk * k_step
    # Per k-tile: accumulators in and out of the C tile, micro-tile set-up, packing.
    c_in_l1 = tm * tn * bytes_ <= machine.l1d_bytes
    acc_reload = micro_tiles * (_ACC_CYCLES * acc_regs * (1 if c_in_l1 else 2) + _MICRO_SETUP)
    pack = ((_IM2COL if im2col else 1.0) * tm + tn) * tk / lanes * _COPY_CYCLES
    if batch * (m * k + k * n) * bytes_ > machine.l3_bytes:  # packed from memory
        core_bw = machine.mem_gbps / threads / machine.clock_ghz  # bytes per cycle
        pack = max(pack, 2 * (tm + tn) * tk * bytes_ / max(core_bw, 1e-3))
    task = k_steps * (pack + acc_reload + compute) + micro_tiles * acc_regs * _ACC_CYCLES
    scaling = machine.all_core_scaling if threads > 1 else 1.0
    seconds = waves * task / (machine.clock_ghz * 1e9 * max(scaling, 0.05))
    unique = batch * (m * k + k * n + m * n) * bytes_
    seconds = max(seconds, unique / (machine.mem_gbps * 1e9))
    return {
        "tasks": tasks, "waves": waves, "balance": tasks / (waves * threads),
        "threads": threads, "k_steps": k_steps, "acc_regs": acc_regs, "spill_regs": spill,
        "latency_bound": latency_bound, "compute_clk": compute, "pack_clk": pack,
        "acc_reload_clk": acc_reload, "working_set_bytes": working, "l2_miss": l2_miss,
        "stage_stall": stage_stall, "reg_copy_clk": micro_tiles * tk * reg_copy,
        "predicted_s": seconds,
        "predicted_gflops": 2.0 * batch * m * n * k / seconds / 1e9,
    }  # fmt: skip


def features(
    gemm: tuple[int, int, int, int], p: dict[str, Any], dtype: str, target: Any,
    threads: int | None = None, im2col: bool = False,
) -> dict[str, float]:  # fmt: skip
    """The model's view of a candidate: its parameters, derived quantities, prediction.

    A CPU target without machine numbers (a spec recorded before calibration, or never
    resolved on a worker) is modelled as the machine this runs on, calibrated once per
    process (`calibrate.local_machine`)."""
    if target.kind == "cuda":
        derived = cuda_features(gemm, p, dtype, target.arch)
    else:
        machine = getattr(target, "machine", None) or local_machine()
        derived = cpu_features(gemm, p, machine, threads, im2col)
    return {**{k: float(v) for k, v in p.items()}, **derived}
