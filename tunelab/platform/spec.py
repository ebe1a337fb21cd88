"""Job specs: the YAML or JSON a user submits, validated before anything is written.

A spec has sections shared by every job kind (target, search, measure) and a `workload`
(plus an optional `space`) that the job kind validates with its own models.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class SpecError(ValueError):
    """A job spec that cannot be used; the message names the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Strict):
    """Where kernels are compiled for: the CPU (`llvm`) or an NVIDIA GPU (`cuda` + arch)."""

    kind: Literal["llvm", "cuda"] = "llvm"
    arch: str | None = Field(None, description="CUDA compute capability, e.g. sm_80")
    mcpu: str | None = Field(
        None, description="LLVM CPU name; default: that of the measurement workers"
    )

    @model_validator(mode="after")
    def _arch(self) -> TargetSpec:
        if self.kind == "cuda":
            if self.arch is None:
                raise ValueError("a cuda target needs an arch, e.g. arch: sm_80")
            if not re.fullmatch(r"sm_\d{2,3}[a-z]?", self.arch):
                raise ValueError(f"arch must look like sm_80 or sm_90a, got {self.arch!r}")
            if self.mcpu is not None:
                raise ValueError("mcpu applies to llvm targets only")
        elif self.arch is not None:
            raise ValueError("arch applies to cuda targets only")
        return self

    def label(self) -> str:
        return self.kind if self.arch is None else f"{self.kind}:{self.arch}"


class SearchSpec(_Strict):
    """How candidates are chosen: strategy, how many in all, how many per batch."""

    strategy: Literal["exhaustive", "random", "model"] = "exhaustive"
    budget: PositiveInt | None = Field(None, description="trials in all; default: the whole space")
    batch_size: PositiveInt = 16
    seed: int = 0
    cost_model: Literal["combined", "analytical", "xgboost"] = Field(
        "combined",
        description="model strategy: XGBoost with the analytical prediction as a feature, "
        "the analytical model alone, or XGBoost alone",
    )
    explore: float = Field(
        0.1, ge=0, le=1, description="model strategy: share of each batch picked at random"
    )


class MeasureSpec(_Strict):
    """How each built candidate is timed and when a build or run is given up."""

    warmup: int = Field(1, ge=0)
    repeats: PositiveInt = 5
    number: PositiveInt = Field(1, description="kernel runs averaged into one repeat")
    min_repeat_ms: int = Field(0, ge=0)
    build_timeout_s: PositiveFloat = 60.0
    run_timeout_s: PositiveFloat = 60.0
    max_attempts: PositiveInt = Field(2, le=10, description="tries before a lost worker fails")
    build_only: bool = Field(False, description="compile every candidate, measure none")
    check: bool = Field(True, description="compare each kernel's output with a reference")


class JobSpec(_Strict):
    """A whole job. `workload` and `space` are validated by the job kind's own models."""

    name: str = Field(min_length=1, max_length=255)
    kind: str
    workload: dict[str, Any]
    space: dict[str, Any] = Field(default_factory=dict)
    target: TargetSpec = TargetSpec()
    search: SearchSpec = SearchSpec()
    measure: MeasureSpec = MeasureSpec()

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from tunelab.platform.kinds import available_kinds

        known = available_kinds()
        if value not in known:
            raise ValueError(f"unknown job kind {value!r}; known kinds: {', '.join(sorted(known))}")
        return value

    @field_validator("workload", "space")
    @classmethod
    def _kind_section(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind_name = info.data.get("kind")
        if kind_name is None:  # the kind itself failed; its error is reported
            return value
        from tunelab.platform.kinds import get_kind

        model = getattr(get_kind(kind_name), f"{info.field_name}_model")
        return model.model_validate(value).model_dump(mode="json")

    @model_validator(mode="after")
    def _kind_checks(self) -> JobSpec:
        from tunelab.platform.kinds import get_kind

        get_kind(self.kind).validate_spec(self)
        return self


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(spec)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "spec") -> JobSpec:
    """Validate a spec already loaded into Python objects."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a job spec must be a mapping, got {type(data).__name__}")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: invalid job spec\n{_format_errors(exc)}") from None


def expand_suite(data: Any, source: str = "spec") -> list[Any]:
    """A spec naming `suite:` instead of `workload:` stands for one spec per workload of
    that suite (the kind's named suites); any other spec stands for itself."""
    if not isinstance(data, dict) or "suite" not in data:
        return [data]
    from tunelab.platform.kinds import get_kind

    rest = {k: v for k, v in data.items() if k != "suite"}
    if "workload" in rest:
        raise SpecError(f"{source}: give either suite or workload, not both")
    try:
        kind = get_kind(str(rest.get("kind")))
    except KeyError as exc:
        raise SpecError(f"{source}: {exc.args[0]}") from None
    suites = kind.suites()
    name = data["suite"]
    if name not in suites:
        known = ", ".join(sorted(suites)) or "none"
        raise SpecError(f"{source}: suite: unknown suite {name!r} (known: {known})")
    base = rest.get("name", name)
    return [{**rest, "workload": w, "name": f"{base}/{kind.describe(w)}"} for w in suites[name]]


def read_spec_data(path: str | Path) -> Any:
    """The parsed (not validated) contents of a spec file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    return data


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a spec file (.yaml, .yml or .json) that names one workload."""
    data = read_spec_data(path)
    if isinstance(data, dict) and "suite" in data:
        raise SpecError(f"{path}: names a suite: use load_specs")
    return parse_spec(data, str(path))


def load_specs(path: str | Path) -> list[JobSpec]:
    """Read and validate a spec file; a `suite:` spec gives one job spec per workload."""
    return [parse_spec(d, str(path)) for d in expand_suite(read_spec_data(path), str(path))]
