"""A job kind whose candidates fail on purpose, with real kernels and real process deaths.

Nothing here is mocked: `wrong` is a real TVM GEMM whose reduction stops one element
short, `hang` a real compiled kernel that loops forever, and the `crash_*` variants make
the measurement worker process kill itself with SIGKILL, as a segfaulting kernel would.
Ray workers import this module by name, so tests put the repository on PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tunelab.platform.kinds import BuildError, Built, EvalContext, Measurement
from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.build_llvm import compile_llvm
from tunelab.workers.pipeline_search.kind import PipelineSearch
from tunelab.workers.pipeline_search.measure import measure_llvm
from tunelab.workers.pipeline_search.workloads import GemmWorkload

Variant = Literal[
    "good", "wrong", "hang", "crash_once", "crash_always", "build_error", "build_hang"
]


class FaultyWorkload(GemmWorkload):
    marker_dir: str  # where crash_once leaves a file saying it already crashed


class FaultySpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: list[Variant]


def wrong_gemm(m: int, n: int, k: int, dtype: str) -> Any:
    """A GEMM that forgets the last element of the reduction."""
    from tvm import te

    a = te.placeholder((m, k), dtype, name="A")
    b = te.placeholder((k, n), dtype, name="B")
    r = te.reduce_axis((0, k - 1), name="k")
    c = te.compute(
        (m, n), lambda i, j: te.sum(a[i, r].astype("float32") * b[r, j].astype("float32"), axis=r)
    )
    return te.create_prim_func([a, b, c])


def hanging_kernel(m: int, n: int, k: int, dtype: str) -> Any:
    """Same signature as the GEMM; spins forever on a condition that never changes."""
    from tvm.script import tirx as T

    @T.prim_func
    def main(
        A: T.Buffer((m, k), dtype), B: T.Buffer((k, n), dtype), C: T.Buffer((m, n), "float32")
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        i = T.alloc_buffer((1,), "int32", scope="local")
        i[0] = 0
        while C[0, 0] == C[0, 0] or C[0, 0] != C[0, 0]:  # always true, even for NaN
            i[0] = i[0] + 1

    return main


class FaultyGemm(PipelineSearch):
    """`space.variant` picks the failures; every variant is a real build and a real run."""

    name = "faulty-gemm"
    workload_model = FaultyWorkload
    space_model = FaultySpace

    def validate_spec(self, spec: JobSpec) -> None:
        pass

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        return [{"variant": v} for v in spec.space["variant"]]

    def model_features(self, spec: JobSpec, params: dict[str, Any]) -> None:
        return None  # variants are not schedules: nothing to predict

    def baselines(self, spec: JobSpec) -> list[dict[str, Any]]:
        return []  # the failure tests count exactly one trial per variant

    def _gemm_spec(self, spec: JobSpec) -> JobSpec:
        wl = {k: v for k, v in spec.workload.items() if k != "marker_dir"}
        return spec.model_copy(update={"workload": wl, "kind": "pipeline-search", "space": {}})

    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        wl = FaultyWorkload.model_validate(spec.workload)
        variant = params["variant"]
        if variant == "build_error":
            raise BuildError("this candidate does not compile (on purpose)")
        if variant == "build_hang":  # a compiler that never returns
            while True:
                time.sleep(0.1)
        if variant == "wrong":
            return Built(compile_llvm(wrong_gemm(wl.M, wl.N, wl.K, wl.dtype)))
        if variant == "hang":
            return Built(compile_llvm(hanging_kernel(wl.M, wl.N, wl.K, wl.dtype)))
        good = {"tile_m": 16, "tile_n": 32, "tile_k": 16, "micro_m": 2, "micro_n": 8, "stages": 2}
        return PipelineSearch().build(self._gemm_spec(spec), good)

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        variant = params["variant"]
        marker = Path(spec.workload["marker_dir"]) / f"{variant}.crashed"
        if variant == "crash_always" or (variant == "crash_once" and not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return measure_llvm(self._gemm_spec(spec), built, ctx.cache)
