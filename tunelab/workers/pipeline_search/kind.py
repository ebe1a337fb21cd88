"""The `pipeline-search` job kind: search tiling and pipeline stages of a GEMM on TVM."""

from __future__ import annotations

import itertools
import os
import pickle
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from tunelab.platform.kinds import (
    BuildError,
    Built,
    InvalidCandidate,
    JobKind,
    Measurement,
    RunError,
    WrongResult,
)
from tunelab.platform.spec import JobSpec

CPU_SPACE: dict[str, list[int]] = {
    "tile_m": [16, 32, 64],
    "tile_n": [32, 64, 128],
    "tile_k": [16, 32, 64],
    "micro_m": [2, 4, 8],
    "micro_n": [8, 16, 32],
    "stages": [1, 2, 3],
}
CUDA_SPACE: dict[str, list[int]] = {
    "block_m": [32, 64, 128],
    "block_n": [32, 64, 128],
    "block_k": [16, 32],
    "thread_m": [4, 8],
    "thread_n": [4, 8],
    "vector": [4, 8],
    "stages": [1, 2, 3, 4],
}
# Limits of every sm_80+ GPU; a candidate beyond them is recorded `invalid`, not built.
CUDA_MAX_THREADS = 1024
CUDA_MAX_SMEM = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024}
CUDA_REGS_PER_SM = 65536
# Largest |out - ref| allowed, relative to max |ref|.
TOLERANCE = {"float32": 1e-5, "float16": 1e-3}


class GemmWorkload(BaseModel):
    """C[M, N] = A[M, K] @ B[K, N] with float32 accumulation."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["gemm"] = "gemm"
    M: PositiveInt
    N: PositiveInt
    K: PositiveInt
    dtype: Literal["float32", "float16"] = "float32"
    acc_dtype: Literal["float32"] = "float32"


class PipelineSpace(BaseModel):
    """Restricts the search space: each named parameter takes only the listed values."""

    model_config = ConfigDict(extra="forbid")

    tile_m: list[PositiveInt] | None = None
    tile_n: list[PositiveInt] | None = None
    tile_k: list[PositiveInt] | None = None
    micro_m: list[PositiveInt] | None = None
    micro_n: list[PositiveInt] | None = None
    block_m: list[PositiveInt] | None = None
    block_n: list[PositiveInt] | None = None
    block_k: list[PositiveInt] | None = None
    thread_m: list[PositiveInt] | None = None
    thread_n: list[PositiveInt] | None = None
    vector: list[Literal[1, 2, 4, 8]] | None = None
    stages: list[int] | None = Field(None, description="software-pipeline stages (1 = none)")

    @field_validator("*")
    @classmethod
    def _non_empty(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not value:
            raise ValueError("list must not be empty")
        return value

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not 1 <= s <= 6 for s in value):
            raise ValueError("stages must be between 1 and 6")
        return value


def _base_space(spec: JobSpec) -> dict[str, list[int]]:
    base = CUDA_SPACE if spec.target.kind == "cuda" else CPU_SPACE
    overrides = {k: v for k, v in spec.space.items() if v is not None}
    return {name: overrides.get(name, values) for name, values in base.items()}


def _fits(wl: GemmWorkload, p: dict[str, int], cuda: bool) -> bool:
    if cuda:
        return (
            wl.M % p["block_m"] == 0
            and wl.N % p["block_n"] == 0
            and wl.K % p["block_k"] == 0
            and p["block_m"] % p["thread_m"] == 0
            and p["block_n"] % p["thread_n"] == 0
        )
    return (
        wl.M % p["tile_m"] == 0
        and wl.N % p["tile_n"] == 0
        and wl.K % p["tile_k"] == 0
        and p["tile_m"] % p["micro_m"] == 0
        and p["tile_n"] % p["micro_n"] == 0
    )


def find_nvcc() -> str | None:
    for candidate in (
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def nvcc_compile(source: str, arch: str, timeout_s: float) -> tuple[bytes, dict[str, int]]:
    """Compile CUDA source to a cubin; returns it with ptxas' register/smem usage."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found on this build worker (set CUDA_HOME or PATH)")
    with tempfile.TemporaryDirectory(prefix="tunelab-nvcc-") as tmp:
        src, out = os.path.join(tmp, "kernel.cu"), os.path.join(tmp, "kernel.cubin")
        with open(src, "w") as f:
            f.write(source)
        cmd = [nvcc, "--cubin", f"-arch={arch}", "-O3", "-w", "-Xptxas", "-v", "-o", out, src]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BuildError(f"nvcc took longer than {timeout_s:.0f} s") from None
        if proc.returncode != 0:
            raise BuildError(f"nvcc failed ({proc.returncode}):\n{proc.stderr.strip()[-4000:]}")
        with open(out, "rb") as f:
            cubin = f.read()
    usage: dict[str, int] = {}
    if match := _PTXAS_REGISTERS.search(proc.stderr):
        usage["registers"] = int(match.group(1))
    if match := _PTXAS_SMEM.search(proc.stderr):
        usage["static_smem_bytes"] = int(match.group(1))
    return cubin, usage


def _llvm_target(mcpu: str | None) -> Any:
    import tvm

    target: dict[str, Any] = {"kind": "llvm"}
    if mcpu:
        target["mcpu"] = mcpu
    return tvm.target.Target(target)


class PipelineSearch(JobKind):
    """GEMM with tiling and software-pipeline stages, built with TVM for llvm or cuda."""

    name = "pipeline-search"
    workload_model = GemmWorkload
    space_model = PipelineSpace

    def validate_spec(self, spec: JobSpec) -> None:
        allowed = CUDA_SPACE if spec.target.kind == "cuda" else CPU_SPACE
        wrong = sorted(k for k, v in spec.space.items() if v is not None and k not in allowed)
        if wrong:
            raise ValueError(
                f"space: {', '.join(wrong)} do not apply to {spec.target.kind} targets "
                f"(its parameters: {', '.join(allowed)})"
            )
        if not self.space(spec):
            raise ValueError("space: no candidate divides the workload's M, N and K")

    def resolve_spec(self, spec: JobSpec, on_worker: Callable[[Callable[[], Any]], Any]) -> JobSpec:
        """Build for the CPU the measurements run on, not for whichever node builds."""
        if spec.target.kind != "llvm" or spec.target.mcpu is not None:
            return spec
        from tunelab.workers.environment import llvm_host_cpu

        target = spec.target.model_copy(update={"mcpu": on_worker(llvm_host_cpu)})
        return spec.model_copy(update={"target": target})

    def describe(self, workload: dict[str, Any]) -> str:
        wl = self.workload_model.model_validate(workload)
        assert isinstance(wl, GemmWorkload)
        return f"gemm {wl.M}x{wl.N}x{wl.K} {wl.dtype}"

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        wl = GemmWorkload.model_validate(spec.workload)
        base = _base_space(spec)
        names = list(base)
        cuda = spec.target.kind == "cuda"
        out = []
        for values in itertools.product(*(base[n] for n in names)):
            params = dict(zip(names, values, strict=True))
            if _fits(wl, params, cuda):
                out.append(params)
        return out

    # -- build (CPU task) ---------------------------------------------------------------

    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        wl = GemmWorkload.model_validate(spec.workload)
        if spec.target.kind == "cuda":
            return self._build_cuda(spec, wl, params)
        return self._build_llvm(spec, wl, params)

    def _build_llvm(self, spec: JobSpec, wl: GemmWorkload, p: dict[str, Any]) -> Built:
        from tunelab.workers.pipeline_search.gemm import compile_schedule, schedule_cpu

        try:
            sch = schedule_cpu(wl.M, wl.N, wl.K, wl.dtype, p)
            ex = compile_schedule(sch, _llvm_target(spec.target.mcpu))
        except Exception as exc:  # TVM raises many types; all mean this candidate failed
            raise BuildError(f"{type(exc).__name__}: {exc}") from None
        with tempfile.TemporaryDirectory(prefix="tunelab-build-") as tmp:
            path = os.path.join(tmp, "kernel.so")
            ex.export_library(path)
            with open(path, "rb") as f:
                artifact = f.read()
        return Built(artifact, {"pipelined": _pipelined(p, "local")})

    def _build_cuda(self, spec: JobSpec, wl: GemmWorkload, p: dict[str, Any]) -> Built:
        import tvm

        from tunelab.workers.pipeline_search.gemm import (
            compile_schedule,
            cuda_shared_bytes,
            cuda_threads,
            schedule_cuda,
        )

        arch = spec.target.arch or "sm_80"
        n_tx, n_ty = cuda_threads(p)
        smem = cuda_shared_bytes(p, 2 if wl.dtype == "float16" else 4)
        smem_limit = CUDA_MAX_SMEM.get(arch.rstrip("a"), 99 * 1024)
        if n_tx * n_ty > CUDA_MAX_THREADS:
            raise InvalidCandidate(f"{n_tx * n_ty} threads per block > {CUDA_MAX_THREADS}")
        if smem > smem_limit:
            raise InvalidCandidate(f"{smem} bytes of shared memory > {smem_limit} on {arch}")
        per_copy = n_tx * n_ty * p["vector"]
        for name, elems in (("A", p["block_m"] * p["block_k"]), ("B", p["block_k"] * p["block_n"])):
            if elems % per_copy:
                raise InvalidCandidate(
                    f"the {name} tile ({elems} elements) does not split evenly into "
                    f"{n_tx * n_ty} threads x {p['vector']}-wide copies"
                )
        try:
            sch = schedule_cuda(wl.M, wl.N, wl.K, wl.dtype, p)
            ex = compile_schedule(sch, tvm.target.Target({"kind": "cuda", "arch": arch}))
            source = ex.mod.imports[0].inspect_source()
        except Exception as exc:
            raise BuildError(f"{type(exc).__name__}: {exc}") from None
        cubin, usage = nvcc_compile(source, arch, spec.measure.build_timeout_s)
        if usage.get("registers", 0) * n_tx * n_ty > CUDA_REGS_PER_SM:
            raise InvalidCandidate(f"{usage['registers']} registers x {n_tx * n_ty} threads")
        kernel = re.search(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", source)
        bundle = {
            "cubin": cubin,
            "source": source,
            "kernel": kernel.group(1) if kernel else None,
            "grid": [wl.N // p["block_n"], wl.M // p["block_m"], 1],
            "block": [n_tx, n_ty, 1],
            "dynamic_smem_bytes": smem if "extern __shared__" in source else 0,
            "args": [
                {"name": "A", "shape": [wl.M, wl.K], "dtype": wl.dtype},
                {"name": "B", "shape": [wl.K, wl.N], "dtype": wl.dtype},
                {"name": "C", "shape": [wl.M, wl.N], "dtype": wl.acc_dtype},
            ],
        }
        info = {
            "pipelined": _pipelined(p, "shared"),
            "cp_async": source.count("cp.async"),
            "shared_bytes": smem,
            **usage,
        }
        return Built(pickle.dumps(bundle), info)

    # -- measure (measurement worker) ---------------------------------------------------

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, cache: dict[str, Any]
    ) -> Measurement:
        if spec.target.kind == "cuda":
            raise RunError("measuring CUDA kernels needs the GPU runner, which is not built yet")
        return measure_llvm(spec, built, cache)


def _pipelined(p: dict[str, Any], scope: str) -> list[dict[str, Any]]:
    """Which buffers this candidate pipelines, at which level, with how many stages."""
    if p["stages"] <= 1:
        return []
    return [{"buffer": b, "level": f"global->{scope}", "stages": p["stages"]} for b in "AB"]


def reference_data(workload: dict[str, Any], cache: dict[str, Any]) -> tuple[Any, ...]:
    """Seeded inputs and the NumPy result for a GEMM workload, computed once per worker."""
    key = ("gemm", tuple(sorted(workload.items())))
    if key not in cache:
        wl = GemmWorkload.model_validate(workload)
        rng = np.random.default_rng(0)
        a = rng.uniform(-1, 1, (wl.M, wl.K)).astype(wl.dtype)
        b = rng.uniform(-1, 1, (wl.K, wl.N)).astype(wl.dtype)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        cache[key] = (a, b, ref)
    return cache[key]


def check_output(out: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    """Raise WrongResult unless `out` matches `ref` within the dtype's tolerance."""
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        raise WrongResult("output has the wrong shape or non-finite values")
    scale = float(np.max(np.abs(ref))) or 1.0
    err = float(np.max(np.abs(out.astype(np.float64) - ref))) / scale
    if err > TOLERANCE[dtype]:
        raise WrongResult(f"max error {err:.3g} (relative to max |ref|) > {TOLERANCE[dtype]:g}")


def load_llvm_module(artifact: bytes) -> Any:
    """Load an exported TVM shared library from its bytes."""
    import tvm

    fd, path = tempfile.mkstemp(prefix="tunelab-kernel-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(artifact)
        return tvm.runtime.load_module(path)
    finally:
        os.unlink(path)  # the loader keeps its own mapping


def time_module(mod: Any, args: list[Any], spec: JobSpec, func: str = "main") -> list[float]:
    """Seconds per run for each of `repeats` repeats, after `warmup` untimed runs."""
    import tvm

    m = spec.measure
    for _ in range(m.warmup):
        mod[func](*args)
    evaluator = mod.time_evaluator(
        func, tvm.cpu(), number=m.number, repeat=m.repeats, min_repeat_ms=round(m.min_repeat_ms)
    )
    return [float(x) for x in evaluator(*args).results]


def measure_llvm(spec: JobSpec, built: Built, cache: dict[str, Any]) -> Measurement:
    import tvm

    wl = GemmWorkload.model_validate(spec.workload)
    a, b, ref = reference_data(spec.workload, cache)
    dev = tvm.cpu()
    try:
        mod = load_llvm_module(built.artifact)
        args = [
            tvm.runtime.tensor(a, dev),
            tvm.runtime.tensor(b, dev),
            tvm.runtime.tensor(np.full((wl.M, wl.N), np.nan, wl.acc_dtype), dev),
        ]
        t0 = time.perf_counter()
        mod["main"](*args)
        first_run_s = time.perf_counter() - t0
    except Exception as exc:
        raise RunError(f"{type(exc).__name__}: {exc}") from None
    if spec.measure.check:
        check_output(args[2].numpy(), ref, wl.dtype)
    latencies = time_module(mod, args, spec)
    return Measurement(latencies, {"first_run_s": first_run_s})
