"""Building for CUDA: TVM generates the kernel's source, nvcc compiles it to a cubin.

The artifact is a bundle (`datafile`: the launch description as JSON, the cubin as a
binary section; never a pickle, see `read_bundle`) that `gpu.measure_cuda` runs without
TVM or a compiler on the GPU node.
"""

from __future__ import annotations

import re
from typing import Any

from tunelab.platform.datafile import pack, unpack
from tunelab.platform.kinds import BuildError, Built, InvalidCandidate
from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.nvcc import nvcc_compile
from tunelab.workers.pipeline_search.workloads import Conv2dWorkload, GemmWorkload, arg_shapes

# Limits of every sm_80+ GPU; a candidate beyond them is recorded `invalid`, not built.
CUDA_MAX_THREADS = 1024
CUDA_MAX_SMEM = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024}
CUDA_REGS_PER_SM = 65536
CUDA_MAX_REGS_PER_THREAD = 255


def build_cuda(spec: JobSpec, wl: GemmWorkload | Conv2dWorkload, p: dict[str, Any]) -> Built:
    """Check one CUDA candidate against the GPU's limits, then generate and compile it."""
    import tvm

    from tunelab.workers.pipeline_search.schedules import (
        compile_schedule,
        cuda_shared_bytes,
        cuda_tiles,
        cuda_vector,
        pipeline,
        schedule_cuda,
    )

    arch = spec.target.arch or "sm_80"
    if p.get("tensor_core") and wl.dtype != "float16":
        raise InvalidCandidate("tensor cores (wmma) need float16 inputs; use tensor_core: 0")
    t = cuda_tiles(p)
    threads = t["threads_x"] * t["threads_y"]
    smem = cuda_shared_bytes(p, wl.dtype)
    smem_limit = CUDA_MAX_SMEM.get(arch.rstrip("a"), 99 * 1024)
    if threads > CUDA_MAX_THREADS:
        raise InvalidCandidate(f"{threads} threads per block > {CUDA_MAX_THREADS}")
    if smem > smem_limit:
        raise InvalidCandidate(f"{smem} bytes of shared memory > {smem_limit} on {arch}")
    vec = cuda_vector(p, wl.dtype)
    for name, elems in (("A", t["block_m"] * t["block_k"]), ("B", t["block_k"] * t["block_n"])):
        if elems % (threads * vec):
            raise InvalidCandidate(
                f"the {name} tile ({elems} elements) does not split evenly into "
                f"{threads} threads' copies"
            )
    try:
        sch = schedule_cuda(wl, p)
        pipelined = pipeline(sch, p, asynchronous=True)
        ex = compile_schedule(sch, tvm.target.Target({"kind": "cuda", "arch": arch}))
        source = ex.mod.imports[0].inspect_source()
    except Exception as exc:
        raise BuildError(f"{type(exc).__name__}: {exc}") from None
    cubin, usage = nvcc_compile(source, arch, spec.measure.build_timeout_s)
    regs = usage.get("registers", 0)
    if regs * threads > CUDA_REGS_PER_SM:
        raise InvalidCandidate(f"{regs} registers x {threads} threads > {CUDA_REGS_PER_SM}")
    kernel = re.search(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", source)
    batch, m, n, _ = wl.gemm_shape()
    bundle = {
        "cubin": cubin,
        "source": source,
        "kernel": kernel.group(1) if kernel else None,
        "grid": [-(-n // t["block_n"]), -(-m // t["block_m"]), batch],
        # wmma: lanes x warp rows x warp columns; SIMT: threads laid out 8x4 per warp.
        "block": [32, p["block_row_warps"], p["block_col_warps"]]
        if p.get("tensor_core")
        else [t["threads_x"], t["threads_y"], 1],
        "dynamic_smem_bytes": smem if "extern __shared__" in source else 0,
        "args": [
            {"name": name, "shape": list(shape), "dtype": dtype}
            for name, shape, dtype in arg_shapes(wl)
        ],
    }
    info = {
        "pipelined": pipelined,
        "cp_async": source.count("cp.async"),
        "mma_sync": source.count("mma_sync"),
        "shared_bytes": smem,
        "vector": vec,
        **usage,
    }
    return Built(write_bundle(bundle), info)


BUNDLE_TAG = "cuda-bundle"


def write_bundle(bundle: dict[str, Any]) -> bytes:
    """A build's bundle as data: everything but the cubin as JSON, the cubin as bytes."""
    meta = {k: v for k, v in bundle.items() if k != "cubin"}
    return pack(BUNDLE_TAG, meta, {"cubin": bundle["cubin"]})


def read_bundle(artifact: bytes) -> dict[str, Any]:
    """The bundle `write_bundle` stored (DataFormatError for anything else)."""
    meta, sections = unpack(BUNDLE_TAG, artifact, "a CUDA build's bundle")
    return {**meta, "cubin": sections["cubin"]}
