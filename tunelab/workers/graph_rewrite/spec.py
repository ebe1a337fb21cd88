"""The graph-rewrite kind's spec sections: the model and environment (`workload`), how
graphs are measured (`measure`), and the options of its searches (`search.<name>`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from tunelab.platform.spec import MeasureSpec

SUITE_NAMES = ("bert", "vit", "resnext50", "transducer")
_MODULE_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def check_model_ref(value: str) -> str:
    """A suite name or `module:function`; the module must import and name the function
    (checked here, at submit, so a typo never starts a job)."""
    if value in SUITE_NAMES:
        return value
    if not _MODULE_REF.fullmatch(value):
        raise ValueError(
            f"model {value!r} is neither a suite model ({', '.join(SUITE_NAMES)}) nor "
            "module:function"
        )
    import importlib

    module, _, func = value.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as exc:
        raise ValueError(
            f"model {value!r}: module {module!r} does not import ({type(exc).__name__}: {exc})"
        ) from None
    if not callable(getattr(mod, func, None)):
        raise ValueError(f"model {value!r}: module {module!r} has no function {func!r}")
    return value


class GraphRewriteWorkload(BaseModel):
    """The model whose graph is rewritten, and the environment's settings."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="a suite model (bert, vit, resnext50, transducer) or "
        "module:function returning (model, example inputs)"
    )
    size: Literal["test", "cpu", "full"] = Field(
        "cpu", description="suite models: test (tiny), cpu (a 2-core machine), full (the paper's)"
    )
    weights_seed: int = Field(0, description="seed of the random weights (no download)")
    rules: list[str] | None = Field(None, description="rule names to use (default: all)")
    horizon: PositiveInt = Field(50, description="rewrites per episode at most (X-RLflow: 50-100)")
    max_candidates: PositiveInt = Field(
        64, le=4096, description="candidates per step (sub-sampled beyond; X-RLflow: 500)"
    )
    held_out: list[str] = Field(
        default_factory=list, description="models the RL policy is evaluated on, untrained"
    )
    workers: PositiveInt | None = Field(
        None, description="rollout workers (default: as many as the cluster's CPUs allow)"
    )

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return check_model_ref(value)

    @field_validator("held_out")
    @classmethod
    def _held_out(cls, value: list[str]) -> list[str]:
        return [check_model_ref(v) for v in value]

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("rules must not be empty (omit it for every rule)")
            from tunelab.workers.graph_rewrite.rules import get_rules

            get_rules(value)  # ValueError naming the unknown rule
        return value


class GraphMeasureSpec(MeasureSpec):
    """How graphs are measured. A found graph is timed end to end against the original
    in paired rounds, order shuffled each round (`rounds` rounds, each sample at least
    `min_sample_ms`); its speedup is the ratio of medians, with its 95% paired bootstrap
    interval and verdict. Every final graph is checked against the original on the
    example inputs and fresh random ones (`rtol`/`atol`): a mismatch is `wrong_result`.

    After the search, the `final_top_k` distinct final graphs with the best recorded
    speedups are timed again against the original on one worker, over `final_rounds`
    paired rounds; the job's best is the winner of those rounds (the original itself when
    no graph is faster). At least 10 rounds: each round gives one paired sample per
    graph, and a bootstrap interval of a median from fewer samples is little more than
    their range."""

    rounds: PositiveInt = Field(15, le=1000, description="paired rounds of a trial's e2e timing")
    min_sample_ms: float = Field(2.0, gt=0, description="each timed sample lasts at least this")
    e2e_every: PositiveInt | None = Field(
        None, description="also time the graph end to end every k rewrites of an episode"
    )
    rtol: float = Field(1e-3, gt=0)
    atol: float = Field(1e-4, gt=0)
    op_repeats: PositiveInt = Field(7, description="timed runs of one operator (cost model)")
    run_timeout_s: float = Field(3600.0, gt=0, description="deadline of one episode or search")
    final_top_k: int = Field(
        3,
        ge=0,
        le=20,
        description="distinct final graphs timed again against the original after the "
        "search, to decide the job's best under noise (0: none; the best single "
        "measurement stands)",
    )
    final_rounds: PositiveInt = Field(
        20, ge=10, le=1000, description="paired rounds of the final timing (one sample each)"
    )


class BacktrackingOptions(BaseModel):
    """TASO's backtracking search: expand the cheapest graph; keep a rewrite whose cost
    is at most `alpha` x the best cost; stop after `budget` graphs."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(1.05, ge=1.0, le=2.0, description="TASO: 1.0-1.05")
    budget: PositiveInt = Field(1000, description="graphs explored at most (TASO: 1,000)")


class GreedyOptions(BaseModel):
    """Greedy search: take the cheapest candidate while it lowers the cost."""

    model_config = ConfigDict(extra="forbid")

    budget: PositiveInt = Field(100_000, description="graphs explored at most")


class RandomOptions(BaseModel):
    """Random episodes: each step a uniformly random candidate or STOP."""

    model_config = ConfigDict(extra="forbid")

    episodes: PositiveInt = Field(20, description="episodes (trials)")
