"""The pipeline-search kind's spec sections: the workload (GEMM or conv2d), the space,
the target (llvm or cuda) and its timing settings."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from tunelab.platform.spec import MeasureSpec
from tunelab.workers.pipeline_search.calibrate import CpuMachine
from tunelab.workers.pipeline_search.workloads import Conv2dWorkload, GemmWorkload


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


class TargetSpec(BaseModel):
    """Where kernels are compiled for: the CPU (`llvm`) or an NVIDIA GPU (`cuda` + arch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["llvm", "cuda"] = "llvm"
    arch: str | None = Field(None, description="CUDA compute capability, e.g. sm_80")
    mcpu: str | None = Field(
        None, description="LLVM CPU name; default: that of the measurement workers"
    )
    machine: CpuMachine | None = Field(
        None,
        description="llvm: the measuring node's calibrated numbers (clock, FLOP/cycle, "
        "caches, bandwidth, measurement threads) for the analytical model; filled in when "
        "the job starts (calibrate.py), absent from specs recorded before",
    )

    @model_validator(mode="after")
    def _arch(self) -> TargetSpec:
        if self.kind == "cuda":
            if self.arch is None:
                raise ValueError("a cuda target needs an arch, e.g. arch: sm_80")
            if not re.fullmatch(r"sm_\d{2,3}[a-z]?", self.arch):
                raise ValueError(f"arch must look like sm_80 or sm_90a, got {self.arch!r}")
            if self.mcpu is not None or self.machine is not None:
                raise ValueError("mcpu and machine apply to llvm targets only")
        elif self.arch is not None:
            raise ValueError("arch applies to cuda targets only")
        return self

    def label(self) -> str:
        return self.kind if self.arch is None else f"{self.kind}:{self.arch}"


class TimingSpec(MeasureSpec):
    """The platform's measure settings plus TVM's timing knobs."""

    number: PositiveInt = Field(1, description="kernel runs averaged into one repeat")
    min_repeat_ms: int = Field(0, ge=0, description="raise `number` until a repeat lasts this")
    final_rounds: PositiveInt = Field(
        10,
        le=50,
        description="at most this many final rounds (fewer once the verdict is clear); paired "
        "rounds decide nothing from fewer than 6 (platform/noise.py: the sign-test bound)",
    )
