"""Calibration of the CPU model: the numbers of the machine that measures, measured there.

A short run (about a second once TVM is loaded) on the measuring node: the clock (a
dependent chain of one-cycle integer operations), the peak FP32 rate of one core (an FMA
loop with 8 independent vector accumulators, built with TVM's llvm backend for the
node's CPU) and so FLOP per cycle, the FMA latency (the same loop with one accumulator),
the rate of the FMA loop on every thread a measurement uses (all-core scaling), memory
bandwidth (a parallel copy of arrays past the last-level cache), the vector width and
register count (the CPU's flags) and cache sizes (sysfs). The kind caches the result in
the database per environment fingerprint (`PipelineSearch.resolve_spec`) and carries it
in the resolved target, where the analytical model (`perf_model.cpu_features`) reads it.
A calibration measured on a busy node (platform/health.py) serves its job but is not
cached; a cached one keeps the node's health around it and when it was measured.

Numbers are rounded (FLOP/cycle to a power of two, the clock to 0.1 GHz, the rest to two
significant digits) so that two calibrations of one machine usually agree exactly and
the model ranks candidates the same way.

    python -m tunelab.workers.pipeline_search.calibrate   # prints this machine's, as JSON
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CALIBRATION_VERSION = 1  # bump when what is measured, or how, changes: old cache rows lapse
ACCUMULATORS = 8  # independent vector accumulators of the FMA loop: enough on any core
RUN_S = 0.002  # one timed run; the best of many short runs sees the fewest interruptions
SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class CpuMachine:
    """What the CPU model needs to know about the node that measures (per core unless
    said otherwise). `threads`: the threads a measurement uses there; `method`: `tvm`
    (measured) or `nominal` (no TVM on the node: flags and /proc/cpuinfo only)."""

    threads: int
    cores: int
    clock_ghz: float
    flops_per_cycle: float  # FP32, one core
    lanes: int  # FP32 values per vector register
    vector_registers: int
    fma_latency: float  # cycles
    all_core_scaling: float  # FMA rate on `threads` threads / (threads x one core's)
    l1d_bytes: int
    l2_bytes: int
    l3_bytes: int
    mem_gbps: float  # copy bandwidth (read + write) on `threads` threads
    method: str = "tvm"

    @property
    def peak_flops(self) -> float:
        """Peak FP32 FLOP/s of one core: FLOP/cycle x clock."""
        return self.flops_per_cycle * self.clock_ghz * 1e9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CpuMachine:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# -- what the CPU says about itself ------------------------------------------------------


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def vector_unit(flags: set[str]) -> tuple[int, int]:
    """(FP32 lanes per vector register, vector registers) of the widest vector ISA."""
    if "avx512f" in flags:
        return 16, 32
    if "avx2" in flags or "avx" in flags:
        return 8, 16
    if "asimd" in flags or platform.machine() in ("aarch64", "arm64"):
        return 4, 32  # NEON (SVE's length varies; 128-bit is its floor)
    return 4, 16  # SSE


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip()
    return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text or 0)


def cache_sizes(root: Path = SYSFS_CACHE) -> dict[int, int]:
    """Bytes of each data cache level of CPU 0 (one instance) from sysfs; typical sizes
    (32 KiB, 1 MiB, 8 MiB) for levels it does not list."""
    sizes = {1: 32 * 1024, 2: 1024 * 1024, 3: 8 * 1024 * 1024}
    for index in sorted(root.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            size = _size((index / "size").read_text())
        except (OSError, ValueError, KeyError):
            continue
        if kind in ("Data", "Unified") and size > 0:
            sizes[level] = size
    return sizes


def usable_cores() -> int:
    """CPUs of this node (not this thread's affinity: TVM pins the thread it runs on)."""
    return os.cpu_count() or 1


def _two_digits(x: float) -> float:
    return float(f"{x:.2g}") if x > 0 else 0.0


def _power_of_two(x: float) -> float:
    """Peak FLOP/cycle of a real core is FMA pipes x lanes x 2: a power of two."""
    return float(2 ** round(math.log2(x))) if x > 0 else 0.0


# -- the measurements (TVM) ----------------------------------------------------------


def _kernels(lanes: int, threads: int, rows: int) -> Any:
    """The calibration kernels as one IRModule: FMA loops with ACCUMULATORS and with one
    accumulator, the same on `threads` threads at once, a dependent integer chain and a
    parallel copy of `rows` x 4096 floats."""
    from tvm.script import ir as I
    from tvm.script import tirx as T

    acc = ACCUMULATORS
    width = acc * lanes
    mul, add = T.float32(0.999999), T.float32(1e-6)  # stays finite and normal forever

    @I.ir_module
    class Kernels:
        @T.prim_func
        def fma(x: T.Buffer((width,), "float32"), n: T.int32):
            T.func_attr({"global_symbol": "fma", "tirx.noalias": True})
            r = T.alloc_buffer((width,), "float32", scope="local")
            for j in T.unroll(acc):
                for v in T.vectorized(lanes):
                    r[j * lanes + v] = x[j * lanes + v]
            for _ in range(n):
                for j in T.unroll(acc):
                    for v in T.vectorized(lanes):
                        r[j * lanes + v] = r[j * lanes + v] * mul + add
            for j in T.unroll(acc):
                for v in T.vectorized(lanes):
                    x[j * lanes + v] = r[j * lanes + v]

        @T.prim_func
        def fma1(x: T.Buffer((lanes,), "float32"), n: T.int32):
            T.func_attr({"global_symbol": "fma1", "tirx.noalias": True})
            r = T.alloc_buffer((lanes,), "float32", scope="local")
            for v in T.vectorized(lanes):
                r[v] = x[v]
            for _ in range(n):
                for v in T.vectorized(lanes):
                    r[v] = r[v] * mul + add
            for v in T.vectorized(lanes):
                x[v] = r[v]

        @T.prim_func
        def fma_all(x: T.Buffer((threads, width), "float32"), n: T.int32):
            T.func_attr({"global_symbol": "fma_all", "tirx.noalias": True})
            for t in T.parallel(threads):
                r = T.alloc_buffer((width,), "float32", scope="local")
                for j in T.unroll(acc):
                    for v in T.vectorized(lanes):
                        r[j * lanes + v] = x[t, j * lanes + v]
                for _ in range(n):
                    for j in T.unroll(acc):
                        for v in T.vectorized(lanes):
                            r[j * lanes + v] = r[j * lanes + v] * mul + add
                for j in T.unroll(acc):
                    for v in T.vectorized(lanes):
                        x[t, j * lanes + v] = r[j * lanes + v]

        @T.prim_func
        def chain(x: T.Buffer((1,), "int64"), n: T.int64):
            # xor and add of constants: one cycle each on every core, and LLVM can
            # neither fold the chain nor merge its steps into a multi-operand LEA.
            T.func_attr({"global_symbol": "chain", "tirx.noalias": True})
            s = T.alloc_buffer((1,), "int64", scope="local")
            s[0] = x[0]
            for _ in range(n):
                s[0] = (s[0] ^ T.int64(0x5BD1E995)) + T.int64(0x3C6EF372)
            x[0] = s[0]

        @T.prim_func
        def copy(src: T.Buffer((rows, 4096), "float32"), dst: T.Buffer((rows, 4096), "float32")):
            T.func_attr({"global_symbol": "copy", "tirx.noalias": True})
            for i in T.parallel(rows):
                for j in range(4096 // lanes):
                    for v in T.vectorized(lanes):
                        dst[i, j * lanes + v] = src[i, j * lanes + v]

    return Kernels


def _best(run: Callable[[], None], work: float, runs: int) -> float:
    """The highest rate (work per second) among `runs` timed runs."""
    best = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        best = max(best, work / dt) if dt > 0 else best
    return best


def _sized(run: Callable[[int], None], per_iter: float, guess: float) -> int:
    """Iterations that make one run last about RUN_S: from the fastest of three short
    runs (after a first call that pays for loading), `guess` being the expected rate."""
    run(1000)
    n = max(1000, int(RUN_S * 0.2 * guess / per_iter))
    dt = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        run(n)
        dt = min(dt, time.perf_counter() - t0)
    return max(1000, int(n * RUN_S / max(dt, 1e-7)))


def calibrate(mcpu: str | None = None, runs: int = 25) -> CpuMachine:
    """Measure this machine (run it on the node that measures, with its thread settings:
    the all-core loop and the copy use the threads of TVM's pool, which a measuring
    worker sets to the measurement's count). Nominal numbers where TVM is missing."""
    flags = cpu_flags()
    lanes, registers = vector_unit(flags)
    caches = cache_sizes()
    try:
        import numpy as np
        import tvm
    except ImportError:
        return nominal(flags)
    from tunelab.workers.pipeline_search.build_llvm import llvm_host_cpu, llvm_target

    threads = int(tvm.get_global_func("runtime.NumThreads")())
    copy_bytes = min(max(4 * caches.get(3, 0) * max(1, threads // 8), 64 << 20), 512 << 20)
    rows = max(threads, copy_bytes // (4 * 4096) // threads * threads)
    lib = tvm.compile(_kernels(lanes, threads, rows), target=llvm_target(mcpu or llvm_host_cpu()))
    width = ACCUMULATORS * lanes
    x = tvm.runtime.tensor(np.ones(width, "float32"))
    x1 = tvm.runtime.tensor(np.ones(lanes, "float32"))
    xs = tvm.runtime.tensor(np.ones((threads, width), "float32"))
    s = tvm.runtime.tensor(np.ones(1, "int64"))

    n = _sized(lambda k: lib["chain"](s, k), 2, 3e9)
    clock = _best(lambda: lib["chain"](s, n), 2 * n, runs)  # one-cycle steps per second
    n = _sized(lambda k: lib["fma"](x, k), 2 * width, 1e11)
    core = _best(lambda: lib["fma"](x, n), 2 * width * n, runs)  # FLOP/s
    n1 = _sized(lambda k: lib["fma1"](x1, k), 1, clock / 4)
    latency = clock / _best(lambda: lib["fma1"](x1, n1), n1, max(5, runs // 3))
    all_core = _best(lambda: lib["fma_all"](xs, n), 2 * width * n * threads, runs)
    src = tvm.runtime.tensor(np.ones((rows, 4096), "float32"))
    dst = tvm.runtime.tensor(np.zeros((rows, 4096), "float32"))
    lib["copy"](src, dst)  # first touch
    bandwidth = _best(lambda: lib["copy"](src, dst), 2 * rows * 4096 * 4, 10)
    return CpuMachine(
        threads=threads,
        cores=usable_cores(),
        clock_ghz=round(clock / 1e9, 1),
        flops_per_cycle=_power_of_two(core / clock),
        lanes=lanes,
        vector_registers=registers,
        fma_latency=float(max(1, round(latency))),
        all_core_scaling=min(1.0, _two_digits(all_core / (threads * core))),
        l1d_bytes=caches[1],
        l2_bytes=caches[2],
        l3_bytes=caches[3],
        mem_gbps=_two_digits(bandwidth / 1e9),
    )


def nominal(flags: set[str] | None = None) -> CpuMachine:
    """Best guesses without measuring (no TVM here): the clock /proc/cpuinfo reports, two
    FMA pipes of the widest vector, a 4-cycle FMA, 10 GB/s."""
    flags = cpu_flags() if flags is None else flags
    lanes, registers = vector_unit(flags)
    caches = cache_sizes()
    mhz = 2500.0
    try:
        with open("/proc/cpuinfo") as f:
            mhz = max(
                (float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")),
                default=mhz,
            )
    except (OSError, ValueError):
        pass
    cores = usable_cores()
    threads = int(os.environ.get("TVM_NUM_THREADS") or cores)
    return CpuMachine(
        threads=threads, cores=cores, clock_ghz=round(mhz / 1000, 1),
        flops_per_cycle=float(4 * lanes), lanes=lanes, vector_registers=registers,
        fma_latency=4.0, all_core_scaling=1.0, l1d_bytes=caches[1], l2_bytes=caches[2],
        l3_bytes=caches[3], mem_gbps=10.0, method="nominal",
    )  # fmt: skip


# -- this machine, for a spec that carries no calibration -------------------------------


@functools.cache
def local_machine(threads: int | None = None) -> CpuMachine:
    """This machine's calibration, once per process: for a spec whose target carries no
    machine numbers (a sweep recorded before calibration existed, a spec never resolved
    on a worker), the model assumes the machine it runs on. Measured in a child process
    with `threads` (default: every usable core, as a measurement would) set the way a
    measuring worker sets them, so this process neither imports TVM nor changes its
    thread pools; nominal numbers if that fails."""
    from tunelab.workers.threads import thread_env

    n = threads or usable_cores()
    cmd = [sys.executable, "-m", "tunelab.workers.pipeline_search.calibrate"]
    try:
        proc = subprocess.run(
            cmd, env={**os.environ, **thread_env(n)}, capture_output=True, text=True,
            timeout=120, check=True,
        )  # fmt: skip
        return CpuMachine.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, TypeError):
        return nominal()


# -- the cache, per environment fingerprint ---------------------------------------------


def cache_key(environment_fingerprint: str) -> dict[str, Any]:
    """The kind-data key of a node's calibration: its environment fingerprint (host, CPU,
    library versions, thread settings: `workers/environment.py`)."""
    return {"calibration": CALIBRATION_VERSION, "environment": environment_fingerprint}


def watched(
    quiet_wait_s: float | None, busy_per_core: float
) -> Callable[[], tuple[CpuMachine, dict[str, Any] | None]]:
    """`calibrate` with the node sampled around it, after waiting at most `quiet_wait_s`
    for quiet (None: not watched): a function to run on the measuring node."""

    def calibrate_watched() -> tuple[CpuMachine, dict[str, Any] | None]:
        from tunelab.platform import health

        if quiet_wait_s is None:
            return calibrate(), None
        before = health.wait_quiet(quiet_wait_s, busy_per_core)
        machine = calibrate()
        return machine, health.merge([before, health.sample(busy_per_core, window_s=0.0)])

    return calibrate_watched


def cached(
    key: dict[str, Any],
    measure: Callable[[], CpuMachine | tuple[CpuMachine, dict[str, Any] | None]],
    get: Callable[[dict[str, Any]], dict[str, Any] | None] | None,
    put: Callable[[dict[str, Any], dict[str, Any]], None] | None,
) -> CpuMachine:
    """The calibration stored under `key`, else `measure()` (a machine, or a machine and
    the node's health around it: `watched`) stored there with its health, unless it was
    measured on a busy node or without TVM."""
    if get is not None and (found := get(key)) is not None:
        try:
            return CpuMachine.from_dict(found)
        except TypeError:  # a row this version cannot read: measure again
            pass
    got = measure()
    machine, record = got if isinstance(got, tuple) else (got, None)
    if put is not None and machine.method != "nominal" and not (record and record.get("busy")):
        at = datetime.now(UTC).isoformat(timespec="seconds")
        put(key, {**machine.to_dict(), "measured_at": at, "health": record})
    return machine


if __name__ == "__main__":
    print(json.dumps(calibrate().to_dict()))
