"""Building for the CPU: TVM's llvm backend to a shared library the measurement loads."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tunelab.platform.kinds import BuildError, Built
from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.workloads import Conv2dWorkload, GemmWorkload


def llvm_target(mcpu: str | None) -> Any:
    """The TVM llvm target, tuned for `mcpu` when given (else the generic host CPU)."""
    import tvm

    target: dict[str, Any] = {"kind": "llvm"}
    if mcpu:
        target["mcpu"] = mcpu
    return tvm.target.Target(target)


def library_bytes(executable: Any) -> bytes:
    """The shared library of a module compiled with TVM, as bytes (what `Built` carries)."""
    with tempfile.TemporaryDirectory(prefix="tunelab-build-") as tmp:
        path = os.path.join(tmp, "kernel.so")
        executable.export_library(path)
        with open(path, "rb") as f:
            return f.read()


def compile_llvm(func: Any, mcpu: str | None = None) -> bytes:
    """Compile a TIR function (or IRModule) whose entry is `main` for the CPU: an
    artifact that `measure.measure_llvm` loads and runs like any built candidate."""
    import tvm

    return library_bytes(tvm.compile(func, target=llvm_target(mcpu)))


def compile_candidate(
    wl: GemmWorkload | Conv2dWorkload, p: dict[str, Any], target: Any
) -> tuple[Any, list[dict[str, Any]], Any]:
    """Schedule, pipeline and compile one CPU candidate for `target`: the schedule, what
    was pipelined, and the compiled executable (BuildError if any step fails)."""
    from tunelab.workers.pipeline_search.schedules import (
        compile_schedule,
        pipeline,
        schedule_cpu,
    )

    try:
        sch = schedule_cpu(wl, p)
        pipelined = pipeline(sch, p, asynchronous=False)
        return sch, pipelined, compile_schedule(sch, target)
    except Exception as exc:  # TVM raises many types; all mean this candidate failed
        raise BuildError(f"{type(exc).__name__}: {exc}") from None


def build_llvm(spec: JobSpec, wl: GemmWorkload | Conv2dWorkload, p: dict[str, Any]) -> Built:
    """Schedule, pipeline and compile one CPU candidate."""
    _, pipelined, ex = compile_candidate(wl, p, llvm_target(spec.target.mcpu))
    return Built(library_bytes(ex), {"pipelined": pipelined})


def llvm_host_cpu() -> str | None:
    """The LLVM name of this machine's CPU (what `-mcpu=native` would pick), if TVM is here."""
    try:
        from tvm.target import codegen
    except ImportError:
        return None
    return str(codegen.llvm_get_system_cpu())
