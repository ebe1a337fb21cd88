"""Job specs: the YAML or JSON a user submits, validated before anything is written.

A spec has sections shared by every job kind (`search`, `measure`) and sections the job
kind validates with its own models: `workload`, `space` and `target`. A kind may extend
`measure` with its own settings (`JobKind.measure_model`, a subclass of MeasureSpec), and
a search strategy with options reads them from a section named after it.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tunelab.platform.health import DEFAULT_BUSY_PER_CORE


class SpecError(ValueError):
    """A job spec that cannot be used; the message names the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_number(annotation: Any) -> bool:
    """Whether a field's annotation is int or float, possibly Annotated or optional."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_number(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_number(a) for a in typing.get_args(annotation))
    return False


class _NoBoolNumbers(BaseModel):
    """Refuses `true`/`false` where a number is expected: pydantic would take them as 1/0
    (`budget: true` is a mistake, not a budget of one)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_number(field.annotation):
            raise ValueError(f"Input should be a number, not a boolean ({str(value).lower()})")
        return value


class SearchSpec(_NoBoolNumbers):
    """How candidates are chosen: strategy, how many in all, how many per batch.

    `strategy` names a built-in (exhaustive, random, model), an installed strategy or
    one the kind brings; a strategy's own options go in a section named after it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    strategy: str = Field(
        "exhaustive", description="exhaustive, random, model, or an installed strategy"
    )
    budget: PositiveInt | None = Field(None, description="trials in all; default: the whole space")
    batch_size: PositiveInt = 16
    seed: int = 0
    cost_model: Literal["combined", "analytical", "xgboost"] = Field(
        "combined",
        description="model strategy: XGBoost with the analytical prediction as a feature, "
        "the analytical model alone, or XGBoost alone",
    )
    explore: float = Field(
        0.1,
        ge=0,
        le=1,
        description="model strategy: share of a batch picked at random after a batch that "
        "found nothing better",
    )
    warm_start: bool | None = Field(
        None,
        description="model strategy: learn from the trials other workloads of this kind "
        "recorded on the same kind of target (xgboost, combined; off by default: it did "
        "worse than a cold start on the held-out sweeps)",
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str, info: ValidationInfo) -> str:
        from tunelab.platform.kinds import get_kind
        from tunelab.platform.search.strategies import available_strategies

        kind_name = (info.context or {}).get("kind")
        try:
            kind = get_kind(kind_name) if kind_name else None
        except KeyError:  # the kind's own error is reported
            kind = None
        known = available_strategies(kind)
        if value not in known:
            raise ValueError(f"unknown strategy {value!r} (known: {', '.join(sorted(known))})")
        return value

    def options_for(self, strategy: str, model: type[BaseModel] | None) -> BaseModel | None:
        """The validated options section of `strategy` (its model's defaults if absent)."""
        if model is None:
            return None
        return model.model_validate((self.model_extra or {}).get(strategy, {}))


class MeasureSpec(_Strict, _NoBoolNumbers):
    """How each candidate is evaluated and when a build or an evaluation is given up.

    Kinds that time their candidates read `warmup`/`repeats`; a kind adds settings of its
    own by subclassing this model (`JobKind.measure_model`)."""

    warmup: int = Field(1, ge=0)
    repeats: PositiveInt = 5
    build_timeout_s: PositiveFloat = 60.0
    run_timeout_s: PositiveFloat = Field(
        60.0, description="deadline of one evaluation (a training run may set hours)"
    )
    heartbeat_timeout_s: PositiveFloat = Field(
        120.0,
        description="a long evaluation (one that reports steps) silent for this long is "
        "taken for dead: its worker is replaced and the evaluation retried",
    )
    max_attempts: PositiveInt = Field(2, le=10, description="tries before a lost worker fails")
    build_only: bool = Field(False, description="build every candidate, evaluate none")
    check: bool = Field(True, description="compare each result with a reference")
    keep_checkpoints: PositiveInt = Field(
        3, description="checkpoints kept per evaluation (and for the job); pinned ones stay"
    )
    threads: PositiveInt | None = Field(
        None,
        description="CPU threads a measurement uses (TVM, OpenMP, BLAS, torch alike); "
        "default: every core of the measuring node",
    )
    final_top_k: int = Field(
        5, ge=0, le=50,
        description="timed jobs: finalists measured again after the search, interleaved "
        "with the baselines, to decide the winner under noise (0: no final rounds)",
    )  # fmt: skip
    final_rounds: PositiveInt = Field(
        10,
        le=50,
        description="at most this many final rounds, each one paired sample per finalist "
        "(fewer once the verdict is clear, but never fewer than 10)",
    )
    quiet_wait_s: NonNegativeFloat | None = Field(
        10.0,
        description="before each evaluation (and final round) wait at most this long for "
        "the measuring node to be quiet (platform/health.py); if it never is, measure anyway "
        "and mark the trial 'measured on a busy node'. 0: sample the node, never wait; "
        "null: do not watch the node (kinds whose evaluations time nothing)",
    )
    busy_per_core: PositiveFloat = Field(
        DEFAULT_BUSY_PER_CORE,
        description="the node is busy when runnable tasks not of this job's measuring "
        "workers reach this many per core (0.5: one busy loop on a 2-core node)",
    )
    gate_spread: float | None = Field(
        None,
        gt=1.0,
        description="noise gate: a candidate whose timed repeats spread more than this "
        "(slowest / fastest) is measured again, up to `gate_retries` times; the measurement "
        "with the smallest spread is kept, with every spread seen (extra.gate). Off: none",
    )
    gate_retries: int = Field(3, ge=1, le=20, description="noise gate: re-measurements at most")


class JobSpec(_Strict):
    """A whole job. `workload`, `space` and `target` are validated by the job kind's own
    models, `measure` by the kind's MeasureSpec (sub)class."""

    name: str = Field(min_length=1, max_length=255)
    kind: str
    workload: dict[str, Any]
    space: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    # The kind's target model (None for kinds without one) and measure model instances.
    target: Any = Field(default=None, validate_default=True)
    search: SearchSpec = SearchSpec()
    measure: Any = Field(default=None, validate_default=True)

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

    @field_validator("target", "measure")
    @classmethod
    def _kind_model(cls, value: Any, info: ValidationInfo) -> Any:
        kind_name = info.data.get("kind")
        if kind_name is None:
            return value
        from tunelab.platform.kinds import get_kind

        model = getattr(get_kind(kind_name), f"{info.field_name}_model")
        if model is None:
            if value:
                raise ValueError(f"kind {kind_name!r} takes no {info.field_name} section")
            return None
        if isinstance(value, model):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return model.model_validate(value or {})

    @field_validator("search")
    @classmethod
    def _strategy(cls, value: SearchSpec, info: ValidationInfo) -> SearchSpec:
        kind_name = info.data.get("kind")
        if kind_name is None:
            return value
        from tunelab.platform.kinds import get_kind
        from tunelab.platform.search.strategies import available_strategies, get_strategy

        kind = get_kind(kind_name)
        name = value.strategy
        if name not in available_strategies(kind):  # validated without the kind's context
            known = ", ".join(sorted(available_strategies(kind)))
            raise ValueError(f"unknown strategy {name!r} (known: {known})")
        strategy = get_strategy(name, kind)
        for section in value.model_extra or {}:
            if section != name or strategy.options_model is None:
                raise ValueError(f"{section}: not an option of strategy {name!r}")
        try:
            value.options_for(name, strategy.options_model)
        except ValidationError as exc:
            details = "; ".join(
                f"{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(details) from None
        return value

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
        named = re.match(r"([a-z_]+(?:\.[A-Za-z_]\w*)+): (.*)", msg, re.S)
        if loc == "(spec)" and named:  # a whole-spec check that names its field itself
            loc, msg = named.groups()
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "spec") -> JobSpec:
    """Validate a spec already loaded into Python objects."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a job spec must be a mapping, got {type(data).__name__}")
    try:
        # The kind's name as context: `search.strategy` may name a strategy it brings.
        return JobSpec.model_validate(data, context={"kind": data.get("kind")})
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


class _DuplicateKey(yaml.YAMLError):
    """A mapping that names one key twice (YAML and JSON parsers keep the last silently)."""

    def __init__(self, key: Any, line: int | None = None, first: int | None = None) -> None:
        where = f" at line {line} (first at line {first})" if line is not None else ""
        super().__init__(f"duplicate key {key!r}{where}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, line, seen[key])
                seen[key] = line
            except TypeError:  # an unhashable key: the base class says so
                break
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def read_spec_data(path: str | Path) -> Any:
    """The parsed (not validated) contents of a spec file: UTF-8 JSON or YAML, no key
    given twice in one mapping."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the spec as UTF-8"
        ) from None
    fmt = "json" if path.suffix == ".json" else "yaml"
    try:
        if fmt == "json":
            return json.loads(text, object_pairs_hook=_unique_pairs)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKey as exc:
        raise SpecError(f"{path}: {exc}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not valid {fmt}: {exc}") from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a spec file (.yaml, .yml or .json) that names one workload."""
    data = read_spec_data(path)
    if isinstance(data, dict) and "suite" in data:
        raise SpecError(f"{path}: names a suite: use load_specs")
    return parse_spec(data, str(path))


def load_specs(path: str | Path) -> list[JobSpec]:
    """Read and validate a spec file; a `suite:` spec gives one job spec per workload."""
    return [parse_spec(d, str(path)) for d in expand_suite(read_spec_data(path), str(path))]
