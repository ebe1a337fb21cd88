"""Build the GPU check's kernels here, on the CPU: `make gpu-artifacts`.

For a few BERT dense layers (REFERENCE.md section 1; the bert-dense suite's hidden size
768 at 1024 tokens, and BERT-base's projection and FFN layers at 4096 tokens), each
kernel is built by tunelab's own path: `schedules.schedule_cuda` (ALCOP's dense template)
+ `schedules.pipeline` + `build_cuda.build_cuda` (TVM codegen, nvcc) — tensor cores
(wmma, fp16 inputs, fp32 accumulation) and SIMT (fp32), each pipelined and unpipelined
(stages 1, reg_stages 1) with the same tiles. Out of each generated source come cubins
for sm_80 and sm_90 and PTX for compute_80 (JIT-compiled by the driver on any other
sm_80+ GPU), and a manifest: kernel name, grid, block and dynamic shared memory exactly
as TVM's own host code would launch them (read from the lowered host IR), argument
order with shapes, dtypes and strides, the parameters and the files.

`bench/gpu_check.py` runs them on a GPU without tunelab, TVM or a compiler.

    python bench/gpu_build.py [--out bench/gpu_artifacts] [--only NAME_SUBSTRING]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = Path(__file__).resolve().parent / "gpu_artifacts"
CUBIN_ARCHES = ("sm_80", "sm_90")
PTX_ARCH = "compute_80"  # cp.async needs sm_80; the driver JITs this PTX for newer GPUs

# (M, N, K): M tokens, K input features, N output features.
SHAPES: list[tuple[int, int, int, str]] = [
    (1024, 768, 768, "bert-dense suite: 1024 tokens, hidden 768"),
    (4096, 768, 768, "BERT-base attention projection, 4096 tokens"),
    (4096, 3072, 768, "BERT-base FFN up (768 -> 3072), 4096 tokens"),
    (4096, 768, 3072, "BERT-base FFN down (3072 -> 768), 4096 tokens"),
]

# ALCOP dense-template tiles (REFERENCE.md 1c), the same for both kinds and for the
# pipelined and unpipelined kernel of each: a block of 2x2 warps, each warp 4x2 16x16
# tiles (a 128x64 block tile), k-tile 32 (chunk 2). On tensor cores each warp runs 8 wmma
# accumulators; on SIMT the 128 threads each compute 16x4 outputs.
TILES = {"block_row_warps": 2, "block_col_warps": 2, "warp_row_tiles": 4,
         "warp_col_tiles": 2, "chunk": 2}  # fmt: skip
DTYPE = {"tc": "float16", "simt": "float32"}
# (stages, reg_stages). tc: 4 x 12 KB of shared memory (48 KB, static); simt: 3 x 24 KB
# (72 KB, dynamic: fits sm_80's 163 KB, sm_86/89's 99 KB and sm_90's 227 KB).
STAGES: dict[str, dict[str, tuple[int, int]]] = {
    "tc": {"pipelined": (4, 2), "unpipelined": (1, 1)},
    "simt": {"pipelined": (3, 2), "unpipelined": (1, 1)},
}
NVCC_TIMEOUT_S = 300.0


def artifact_name(kind: str, variant: str, m: int, n: int, k: int) -> str:
    return f"{kind}_{variant}_{m}x{n}x{k}"


def plan() -> list[dict[str, Any]]:
    """Every artifact to build: name, workload and ALCOP parameters."""
    out = []
    for m, n, k, note in SHAPES:
        for kind in ("tc", "simt"):
            for variant, (stages, reg_stages) in STAGES[kind].items():
                out.append(
                    {
                        "name": artifact_name(kind, variant, m, n, k),
                        "kind": kind,
                        "variant": variant,
                        "workload": {"op": "gemm", "M": m, "N": n, "K": k, "dtype": DTYPE[kind]},
                        "note": note,
                        "params": {
                            **TILES,
                            "tensor_core": int(kind == "tc"),
                            "stages": stages,
                            "reg_stages": reg_stages,
                        },
                    }
                )
    return out


# --- reading what was built ---------------------------------------------------------


def elf_symbols(data: bytes) -> list[str]:
    """Names in the symbol tables (.symtab/.dynsym) of an ELF64 little-endian file (a
    cubin), from the section headers alone."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    names = []
    for _name, sh_type, _f, _a, offset, size, link, _i, _al, entsize in sections:
        if sh_type not in (2, 11) or not entsize:  # SHT_SYMTAB, SHT_DYNSYM
            continue
        str_off = sections[link][4]
        for pos in range(offset, offset + size, entsize):
            st_name = struct.unpack_from("<I", data, pos)[0]
            if st_name:
                end = data.index(b"\0", str_off + st_name)
                names.append(data[str_off + st_name : end].decode())
    return names


def elf_machine(data: bytes) -> int:
    """e_machine of an ELF file (190 = EM_CUDA)."""
    return struct.unpack_from("<H", data, 0x12)[0]


def ptx_entries(ptx: str) -> list[str]:
    """Kernel names a PTX file defines (`.entry NAME(`)."""
    import re

    return re.findall(r"\.entry\s+([A-Za-z_$][\w$]*)", ptx)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- building ------------------------------------------------------------------------


def tvm_launches(sch: Any, arch: str) -> list[dict[str, Any]]:
    """The kernels TVM's host code launches, in order, with their launch configuration,
    read from the lowered host IR (`call_ffi_kernel(name, buffers..., extents...)`):
    name, buffer argument names, grid, block and dynamic shared memory bytes."""
    import tvm
    import tvm_ffi
    from tvm.tirx.build import split_host_device_mods

    target = tvm.target.Target({"kind": "cuda", "arch": arch})
    with tvm.transform.PassContext(config={"tirx.use_async_copy": True}):
        mod = tvm.tirx.transform.BindTarget(target.with_host(tvm.target.Target("llvm")))(sch.mod)
        lower, _, _ = tvm.tirx.get_tir_pipeline("default")
        host, _ = split_host_device_mods(lower(mod))
    calls: list[Any] = []

    def visit(node: Any) -> None:
        if getattr(node.op, "name", None) == "tirx.call_ffi_kernel":
            calls.append(node)

    for func in host.functions.values():
        tvm_ffi.structural_walk(func.body, [(tvm.ir.Call, visit)], order="pre")
    launches = []
    for call in calls:
        tags = list(call.attrs.launch_params)
        values = [int(v.value) for v in call.args[len(call.args) - len(tags) :]]
        buffers = call.args[1 : len(call.args) - len(tags)]
        extent = dict(zip(tags, values, strict=True))
        launches.append(
            {
                "name": call.args[0].value,
                "args": [_buffer_name(b) for b in buffers],
                "grid": [extent.get(f"blockIdx.{a}", 1) for a in "xyz"],
                "block": [extent.get(f"threadIdx.{a}", 1) for a in "xyz"],
                "dynamic_smem_bytes": extent.get("tirx.use_dyn_shared_memory", 0),
                "launch_params": tags,
            }
        )
    if not launches:
        raise RuntimeError("no kernel launch found in TVM's host code")
    return launches


def _buffer_name(arg: Any) -> str:
    """`A` of `tirx.buffer_data(A_1)`-style kernel arguments (views are named `A_1`)."""
    buf = arg.args[0] if hasattr(arg, "args") and len(arg.args) else arg
    name = str(getattr(buf, "name", buf))
    return name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name


def _usage(info: dict[str, Any]) -> dict[str, int]:
    """ptxas' registers per thread and static shared memory bytes."""
    return {k: int(info[k]) for k in ("registers", "static_smem_bytes") if k in info}


def nvcc_version() -> str:
    from tunelab.workers.pipeline_search.nvcc import find_nvcc

    nvcc = find_nvcc()
    if nvcc is None:
        return "none"
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def build_one(item: dict[str, Any]) -> dict[str, Any]:
    """Build one artifact in memory: {"manifest": ..., "files": {filename: bytes}}."""
    import tvm

    from tunelab.platform.spec import parse_spec
    from tunelab.workers.pipeline_search.build_cuda import build_cuda, read_bundle
    from tunelab.workers.pipeline_search.nvcc import nvcc_compile, nvcc_ptx
    from tunelab.workers.pipeline_search.schedules import (
        cuda_shared_bytes,
        cuda_tiles,
        pipeline,
        schedule_cuda,
    )
    from tunelab.workers.pipeline_search.workloads import arg_shapes, parse_workload

    name, p = item["name"], item["params"]
    wl = parse_workload(item["workload"])
    spec = parse_spec(
        {
            "name": f"gpu-check-{name}",
            "kind": "pipeline-search",
            "workload": item["workload"],
            "target": {"kind": "cuda", "arch": CUBIN_ARCHES[0]},
            "measure": {"build_only": True, "build_timeout_s": NVCC_TIMEOUT_S},
        }
    )
    built = build_cuda(spec, wl, p)  # tunelab's path: limits, schedule, pipeline, TVM, nvcc
    bundle = read_bundle(built.artifact)
    source: str = bundle["source"]
    cubins = {CUBIN_ARCHES[0]: bundle["cubin"]}
    ptxas = {CUBIN_ARCHES[0]: _usage(built.info)}
    for arch in CUBIN_ARCHES[1:]:
        cubins[arch], usage = nvcc_compile(source, arch, NVCC_TIMEOUT_S)
        ptxas[arch] = _usage(usage)
    ptx = nvcc_ptx(source, PTX_ARCH, NVCC_TIMEOUT_S)

    # The launch configuration as TVM's own host code has it (the schedule again: the
    # same parameters give the same program), checked against build_cuda's.
    sch = schedule_cuda(wl, p)
    pipeline(sch, p, asynchronous=True)
    launches = tvm_launches(sch, CUBIN_ARCHES[0])
    if len(launches) == 1:
        got = launches[0]
        ours = {k: bundle[k] for k in ("grid", "block", "dynamic_smem_bytes")}
        theirs = {k: got[k] for k in ours}
        if bundle["kernel"] != got["name"] or ours != theirs:
            raise RuntimeError(
                f"{name}: build_cuda's launch {bundle['kernel']} {ours} differs from TVM's "
                f"host code {got['name']} {theirs}"
            )

    args = []
    for arg_name, shape, dtype in arg_shapes(wl):
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        args.append(
            {
                "name": arg_name,
                "shape": list(shape),
                "dtype": dtype,
                "strides": strides,
                "role": "output" if arg_name == "C" else "input",
            }
        )
    files = {f"{name}.cu": source.encode(), f"{name}.{PTX_ARCH}.ptx": ptx.encode()}
    for arch, cubin in cubins.items():
        files[f"{name}.{arch}.cubin"] = cubin
    _, m, n, k = wl.gemm_shape()
    tc = bool(p.get("tensor_core"))
    manifest = {
        "name": name,
        "kind": item["kind"],
        "variant": item["variant"],
        "note": item["note"],
        "workload": item["workload"] | {"acc_dtype": wl.acc_dtype},
        "flops": 2 * m * n * k,
        "params": p,
        "tiles": {k: v for k, v in cuda_tiles(p).items() if k.startswith("block_") or not tc},
        "shared_bytes": cuda_shared_bytes(p, wl.dtype),
        "pipelined": built.info.get("pipelined", []),
        "cp_async": built.info.get("cp_async", 0),
        "mma_sync": built.info.get("mma_sync", 0),
        "ptxas": ptxas,
        "kernels": launches,
        "args": args,
        "files": {
            "source": f"{name}.cu",
            "ptx": {PTX_ARCH: f"{name}.{PTX_ARCH}.ptx"},
            "cubin": {arch: f"{name}.{arch}.cubin" for arch in cubins},
        },
        "sha256": {fname: _sha256(data) for fname, data in sorted(files.items())},
        "built_with": {"tvm": tvm.__version__, "nvcc": nvcc_version()},
    }
    return {"manifest": manifest, "files": files}


def verify(manifest: dict[str, Any], folder: Path) -> list[str]:
    """What is wrong with one artifact's files against its manifest (empty: all good)."""
    problems = []
    kernels = [k["name"] for k in manifest["kernels"]]
    for fname, digest in manifest["sha256"].items():
        path = folder / fname
        if not path.is_file():
            problems.append(f"{fname}: missing")
        elif _sha256(path.read_bytes()) != digest:
            problems.append(f"{fname}: sha256 differs from the manifest")
    for arch, fname in manifest["files"]["cubin"].items():
        path = folder / fname
        if not path.is_file():
            continue
        data = path.read_bytes()
        if data[:4] != b"\x7fELF" or elf_machine(data) != 190:
            problems.append(f"{fname}: not a CUDA ELF (cubin)")
            continue
        missing = set(kernels) - set(elf_symbols(data))
        if missing:
            problems.append(f"{fname} ({arch}): no symbol {sorted(missing)}")
    for fname in manifest["files"]["ptx"].values():
        path = folder / fname
        if path.is_file() and (missing := set(kernels) - set(ptx_entries(path.read_text()))):
            problems.append(f"{fname}: no .entry {sorted(missing)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", default="", help="build only artifacts whose name has this")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    items = [i for i in plan() if args.only in i["name"]]
    index_path = args.out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"artifacts": []}
    names = [a for a in index.get("artifacts", []) if a in {i["name"] for i in plan()}]
    for item in items:
        start = time.perf_counter()
        result = build_one(item)
        for fname, data in result["files"].items():
            (args.out / fname).write_bytes(data)
        manifest = result["manifest"]
        (args.out / f"{item['name']}.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if problems := verify(manifest, args.out):
            print("\n".join(problems), file=sys.stderr)
            return 1
        if item["name"] not in names:
            names.append(item["name"])
        launch = manifest["kernels"][0]
        print(
            f"{item['name']:<34} {launch['name']} grid {launch['grid']} block "
            f"{launch['block']} dyn smem {launch['dynamic_smem_bytes']} ptxas "
            f"{manifest['ptxas']}  {time.perf_counter() - start:.1f}s",
            flush=True,
        )
    order = [i["name"] for i in plan()]
    index = {
        "about": "kernels for bench/gpu_check.py, built by bench/gpu_build.py "
        "(make gpu-artifacts); one manifest <name>.json per artifact",
        "artifacts": sorted(names, key=order.index),
    }
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    total = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"{len(names)} artifacts in {args.out} ({total / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
