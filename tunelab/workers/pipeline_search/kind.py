"""The `pipeline-search` job kind: search tiling and two-level pipeline stages on TVM."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
)

from tunelab.platform.kinds import (
    Built,
    JobKind,
    Measurement,
)
from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.workloads import (
    Conv2dWorkload,
    GemmWorkload,
)

CPU_SPACE: dict[str, list[int]] = {
    "tile_m": [16, 32, 64],
    "tile_n": [32, 64, 128],
    "tile_k": [16, 32],
    "micro_m": [4, 8],
    "micro_n": [8, 16],
    "stages": [1, 2, 3],
    "reg_stages": [1, 2, 4],
}
# ALCOP's dense template (REFERENCE.md 1c): 1,620 pipelined configurations (stages 2-6)
# plus the same space unpipelined (stages 1, reg_stages 1), the vanilla-TVM baseline.
CUDA_SPACE: dict[str, list[int]] = {
    "block_row_warps": [1, 2, 4],
    "block_col_warps": [1, 2, 4],
    "warp_row_tiles": [1, 2, 4],
    "warp_col_tiles": [1, 2],
    "chunk": [2, 4],
    "stages": [1, 2, 3, 4, 5, 6],
    "reg_stages": [1, 2, 4],
    # 1: wmma on tensor cores (fp16 inputs only), 0: SIMT. Default: by the input dtype.
    "tensor_core": [0, 1],
}


class PipelineWorkload:
    """Validates a workload section: a GEMM (`op: gemm`, the default; `batch` > 1 for a
    batched GEMM) or a conv2d (`op: conv2d`), each with its own fields, so errors name
    `workload.M`, not the union's branch."""

    MODELS: ClassVar[dict[str, type[BaseModel]]] = {
        "gemm": GemmWorkload,
        "conv2d": Conv2dWorkload,
    }

    @classmethod
    def model_validate(cls, data: Any) -> BaseModel:
        op = data.get("op", "gemm") if isinstance(data, dict) else "gemm"
        model = cls.MODELS.get(op)
        if model is None:
            raise ValueError(f"op must be one of {', '.join(cls.MODELS)}, not {op!r}")
        return model.model_validate(data)


class PipelineSpace(BaseModel):
    """Restricts the search space: each named parameter takes only the listed values."""

    model_config = ConfigDict(extra="forbid")

    tile_m: list[PositiveInt] | None = None
    tile_n: list[PositiveInt] | None = None
    tile_k: list[PositiveInt] | None = None
    micro_m: list[PositiveInt] | None = None
    micro_n: list[PositiveInt] | None = None
    block_row_warps: list[Literal[1, 2, 4, 8]] | None = None
    block_col_warps: list[Literal[1, 2, 4, 8]] | None = None
    warp_row_tiles: list[Literal[1, 2, 4, 8]] | None = None
    warp_col_tiles: list[Literal[1, 2, 4, 8]] | None = None
    chunk: list[Literal[1, 2, 4, 8]] | None = None
    stages: list[int] | None = Field(None, description="outer (shared/cache) stages, 1 = none")
    reg_stages: list[Literal[1, 2, 4]] | None = Field(None, description="register stages")
    tensor_core: list[Literal[0, 1]] | None = Field(
        None, description="cuda: 1 = wmma tensor cores, 0 = SIMT (default: 1 for float16)"
    )

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
    if spec.target.kind == "cuda" and "tensor_core" not in overrides:
        overrides["tensor_core"] = [1] if spec.workload.get("dtype") == "float16" else [0]
    return {name: overrides.get(name, values) for name, values in base.items()}


def _fits(wl: GemmWorkload | Conv2dWorkload, p: dict[str, int], cuda: bool) -> bool:
    """Tiles divide N and K (M may be ragged for conv2d: its rows are predicated)."""
    _, m, n, k = wl.gemm_shape()
    if cuda:
        from tunelab.workers.pipeline_search.schedules import cuda_tiles

        t = cuda_tiles(p)
        bm, bn, bk = t["block_m"], t["block_n"], t["block_k"]
    else:
        bm, bn, bk = p["tile_m"], p["tile_n"], p["tile_k"]
        if bm % p["micro_m"] or bn % p["micro_n"]:
            return False
    # conv2d's rows may be ragged (predicated) on SIMT; wmma works on whole 16x16 tiles.
    ragged_m = isinstance(wl, Conv2dWorkload) and m > bm and not p.get("tensor_core")
    return (m % bm == 0 or ragged_m) and n % bn == 0 and k % bk == 0


class PipelineSearch(JobKind):
    """GEMM-shaped tensor programs (GEMM, batched GEMM, conv2d as implicit GEMM) with
    two-level software pipelining, built with TVM for llvm or cuda."""

    name = "pipeline-search"
    workload_model = PipelineWorkload
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
            raise ValueError("space: no candidate's tiles divide the workload's N and K")

    def resolve_spec(self, spec: JobSpec, on_worker: Callable[[Callable[[], Any]], Any]) -> JobSpec:
        """Build for the CPU the measurements run on, not for whichever node builds."""
        if spec.target.kind != "llvm" or spec.target.mcpu is not None:
            return spec
        from tunelab.workers.environment import llvm_host_cpu

        target = spec.target.model_copy(update={"mcpu": on_worker(llvm_host_cpu)})
        return spec.model_copy(update={"target": target})

    def describe(self, workload: dict[str, Any]) -> str:
        return self.workload_model.model_validate(workload).describe()

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        wl = self.workload_model.model_validate(spec.workload)
        base = _base_space(spec)
        names = list(base)
        cuda = spec.target.kind == "cuda"
        out = []
        for values in itertools.product(*(base[n] for n in names)):
            params = dict(zip(names, values, strict=True))
            if _fits(wl, params, cuda):
                out.append(params)
        return out

    def suites(self) -> dict[str, list[dict[str, Any]]]:
        from tunelab.workers.pipeline_search.workloads import SUITES

        return SUITES

    def model_features(self, spec: JobSpec, params: dict[str, Any]) -> dict[str, float] | None:
        from tunelab.workers.pipeline_search.perf_model import features

        wl = self.workload_model.model_validate(spec.workload)
        return features(wl.gemm_shape(), params, wl.dtype, spec.target)

    def baselines(self, spec: JobSpec) -> list[dict[str, Any]]:
        # cuBLAS through torch.matmul on a GPU; NumPy's BLAS on the CPU. conv2d has no
        # GEMM library baseline here (its im2col would be measured, not the library's conv).
        wl = self.workload_model.model_validate(spec.workload)
        if spec.measure.build_only or wl.op != "gemm":
            return []
        return [{"baseline": "cublas" if spec.target.kind == "cuda" else "numpy"}]

    # -- build (CPU task) ---------------------------------------------------------------

    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        if "baseline" in params:
            return Built(b"", {"baseline": params["baseline"]})
        wl = self.workload_model.model_validate(spec.workload)
        if spec.target.kind == "cuda":
            from tunelab.workers.pipeline_search.build_cuda import build_cuda

            return build_cuda(spec, wl, params)
        from tunelab.workers.pipeline_search.build_llvm import build_llvm

        return build_llvm(spec, wl, params)

    # -- measure (measurement worker) ---------------------------------------------------

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, cache: dict[str, Any]
    ) -> Measurement:
        if spec.target.kind == "cuda":
            from tunelab.workers.pipeline_search.gpu import measure_cuda

            return measure_cuda(spec, params, built, cache)
        from tunelab.workers.pipeline_search.measure import measure_llvm, measure_numpy

        if "baseline" in params:
            return measure_numpy(spec, cache)
        return measure_llvm(spec, built, cache)
