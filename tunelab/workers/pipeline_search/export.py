"""Exporting one `pipeline-search` candidate as deployable files.

The candidate is rebuilt from its parameters with the code its trial was built with
(the same schedule, pipelining and compilation), and written out with what a program
needs to call it without tunelab:

- `kernel_tir.py`: the scheduled, pipelined TIR (a TVMScript module, importable);
- llvm: `kernel.so` (TVM's shared library, entry `main`), `kernel.ll` (LLVM IR) and
  `kernel.s` (assembly);
- cuda: `kernel.cu` (the CUDA C TVM generated) and `kernel.cubin` (compiled by nvcc for
  the target's arch, as the trial's was);
- `launch.json`: how to call it (entry or kernel name, argument order with shapes and
  dtypes; cuda: grid, block and dynamic shared memory; llvm: target and thread hint);
- `README.md`: a few lines that load and call it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunelab.platform.kinds import BuildError, ExportUnsupported
from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.schedules import STATIC_SMEM_LIMIT
from tunelab.workers.pipeline_search.workloads import (
    Conv2dWorkload,
    GemmWorkload,
    arg_shapes,
    parse_workload,
)


def export_candidate(spec: JobSpec, params: dict[str, Any], out_dir: Path) -> list[Path]:
    """Rebuild candidate `params` of `spec` and write its files into `out_dir`."""
    if "baseline" in params:
        raise ExportUnsupported(f"the {params['baseline']} baseline is a library, not a kernel")
    wl = parse_workload(spec.workload)
    out_dir = Path(out_dir)
    if spec.target.kind == "cuda":
        return _export_cuda(spec, wl, params, out_dir)
    return _export_llvm(spec, wl, params, out_dir)


def _args(wl: GemmWorkload | Conv2dWorkload) -> list[dict[str, Any]]:
    """The kernel's arguments in call order: inputs, then the output it writes."""
    shapes = arg_shapes(wl)
    return [
        {"name": name, "shape": list(shape), "dtype": dtype,
         "role": "output" if i == len(shapes) - 1 else "input"}
        for i, (name, shape, dtype) in enumerate(shapes)
    ]  # fmt: skip


def _tir_script(sch: Any, wl: GemmWorkload | Conv2dWorkload, params: dict[str, Any]) -> str:
    """The scheduled module as an importable TVMScript file (its imports uncommented)."""
    lines = [
        f'"""{wl.describe()}: the scheduled, pipelined TIR of candidate',
        f"{json.dumps(params, sort_keys=True)}.",
        "",
        "`Module` is the IRModule; `tvm.compile(Module, target=...)` builds it again.",
        '"""',
        "",
    ]
    for line in sch.mod.script().splitlines():
        lines.append(line[2:] if line.startswith(("# from tvm", "# import tvm")) else line)
    return "\n".join(lines) + "\n"


def _target_json(target: Any) -> Any:
    """A TVM target as JSON: its attributes (TVM writes targets as JSON), else its text."""
    try:
        return json.loads(str(target))
    except ValueError:
        return str(target)


def _write(out_dir: Path, files: dict[str, str | bytes]) -> list[Path]:
    written = []
    for name, content in files.items():
        path = out_dir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        written.append(path)
    return written


def _call_lines(args: list[dict[str, Any]]) -> list[str]:
    return [f"- `{a['name']}`: {a['dtype']} {a['shape']} ({a['role']})" for a in args]


# -- llvm -----------------------------------------------------------------------------


def _export_llvm(
    spec: JobSpec, wl: GemmWorkload | Conv2dWorkload, params: dict[str, Any], out_dir: Path
) -> list[Path]:
    from tunelab.workers.pipeline_search.build_llvm import (
        compile_candidate,
        llvm_host_cpu,
        llvm_target,
    )

    # The trial was built for its measuring node's CPU (resolve_spec); without one named
    # in the spec, the export is built for this machine's, as a build here would be.
    mcpu = spec.target.mcpu or llvm_host_cpu()
    target = llvm_target(mcpu)
    sch, pipelined, ex = compile_candidate(wl, params, target)
    ir, asm = ex.mod.inspect_source("ll"), ex.mod.inspect_source("asm")
    ex.export_library(str(out_dir / "kernel.so"))
    batch, m, n, _ = wl.gemm_shape()
    tasks = batch * -(-m // params["tile_m"]) * -(-n // params["tile_n"])
    args = _args(wl)
    launch = {
        "format": "tvm shared library",
        "library": "kernel.so",
        "entry": "main",
        "target": _target_json(target),
        "mcpu": mcpu,
        "args": args,
        "parallel_tasks": tasks,  # blocks of the one parallel loop: more threads idle
        "threads_hint": min(tasks, spec.measure.threads or os.cpu_count() or 1),
        "threads_env": "TVM_NUM_THREADS",
        "pipelined": pipelined,
    }
    names = ", ".join(a["name"].lower() for a in args)
    output = args[-1]["name"].lower()
    readme = "\n".join([
        f"# {wl.describe()} for the CPU ({mcpu or 'generic'})",
        "",
        f"Candidate `{json.dumps(params, sort_keys=True)}`, exported by `tunelab best`.",
        "",
        "```python",
        "import numpy as np, tvm",
        "",
        *(f"{a['name'].lower()} = tvm.runtime.tensor(np.random.rand{tuple(a['shape'])}"
          f".astype(\"{a['dtype']}\"))  # {a['role']}" for a in args),
        f'tvm.runtime.load_module("kernel.so")["main"]({names})  # writes {output}',
        "```",
        "",
        "Arguments, in order:",
        "",
        *_call_lines(args),
        "",
        f"Set `TVM_NUM_THREADS` to at most {tasks} (its parallel tasks); `launch.json` says",
        "it all. `kernel.ll` and `kernel.s` are the LLVM IR and assembly of `kernel.so`;",
        "`kernel_tir.py` is the scheduled TIR it was compiled from.",
        "",
    ])  # fmt: skip
    return [
        out_dir / "kernel.so",
        *_write(out_dir, {
            "kernel_tir.py": _tir_script(sch, wl, params),
            "kernel.ll": ir,
            "kernel.s": asm,
            "launch.json": json.dumps(launch, indent=2) + "\n",
            "README.md": readme,
        }),
    ]  # fmt: skip


# -- cuda -----------------------------------------------------------------------------


def _export_cuda(
    spec: JobSpec, wl: GemmWorkload | Conv2dWorkload, params: dict[str, Any], out_dir: Path
) -> list[Path]:
    from tunelab.workers.pipeline_search.build_cuda import build_cuda, read_bundle
    from tunelab.workers.pipeline_search.schedules import pipeline, schedule_cuda

    built = build_cuda(spec, wl, params)  # the trial's build: TVM's source, nvcc's cubin
    bundle = read_bundle(built.artifact)
    try:
        sch = schedule_cuda(wl, params)
        pipeline(sch, params, asynchronous=True)
    except Exception as exc:
        raise BuildError(f"{type(exc).__name__}: {exc}") from None
    kernel, smem = bundle["kernel"], int(bundle["dynamic_smem_bytes"])
    if not kernel:
        raise BuildError("no __global__ kernel found in the generated CUDA source")
    arch = spec.target.arch
    args = _args(wl)
    launch = {
        "format": "cubin",
        "cubin": "kernel.cubin",
        "source": "kernel.cu",
        "arch": arch,
        "kernel": kernel,
        "grid": bundle["grid"],
        "block": bundle["block"],
        "dynamic_smem_bytes": smem,
        # Above 48 KB the kernel must be allowed it first (cuFuncSetAttribute).
        "max_dynamic_smem_attribute": smem if smem > STATIC_SMEM_LIMIT else None,
        "args": args,  # device pointers to contiguous row-major arrays, in this order
        "registers": built.info.get("registers"),
        "static_smem_bytes": built.info.get("static_smem_bytes"),
        "pipelined": built.info.get("pipelined"),
    }
    grid, block = tuple(bundle["grid"]), tuple(bundle["block"])
    names = ", ".join(a["name"].lower() for a in args)
    opt_in = (
        [f"k.max_dynamic_shared_size_bytes = {smem}  # over 48 KB: opt in first"]
        if smem > STATIC_SMEM_LIMIT
        else []
    )
    readme = "\n".join([
        f"# {wl.describe()} for CUDA {arch}",
        "",
        f"Candidate `{json.dumps(params, sort_keys=True)}`, exported by `tunelab best`.",
        f"`kernel.cubin` holds `{kernel}` (nvcc, {arch}); `kernel.cu` is its source.",
        "",
        "```python",
        "import cupy as cp",
        "",
        f'k = cp.RawModule(path="kernel.cubin").get_function("{kernel}")',
        *opt_in,
        *(f"{a['name'].lower()} = cp.zeros({tuple(a['shape'])}, \"{a['dtype']}\")"
          for a in args),
        f"k({grid}, {block}, ({names}), shared_mem={smem})",
        "```",
        "",
        "With the driver API: `cuModuleLoad(\"kernel.cubin\")`, `cuModuleGetFunction(...,",
        f'"{kernel}")`, then `cuLaunchKernel` with grid {list(grid)}, block {list(block)}',
        f"and {smem} bytes of dynamic shared memory"
        + (" (after `cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)`)" if opt_in else "")
        + "; its parameters are device pointers, in order:",
        "",
        *_call_lines(args),
        "",
        "`launch.json` says it all; `kernel_tir.py` is the scheduled TIR it came from.",
        "",
    ])  # fmt: skip
    return _write(out_dir, {
        "kernel_tir.py": _tir_script(sch, wl, params),
        "kernel.cu": bundle["source"],
        "kernel.cubin": bundle["cubin"],
        "launch.json": json.dumps(launch, indent=2) + "\n",
        "README.md": readme,
    })  # fmt: skip
