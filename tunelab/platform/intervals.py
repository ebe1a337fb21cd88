"""A ratio and its interval, read and written one way wherever one is shown: the CLI's
`show`, `trials` and `best`, the API's rows and exports, the dashboard.

A trial's interval is kept in its `extra` beside the objective it belongs to:
`<objective>_ci` ([lo, hi], 95%, paired bootstrap over rounds) and `<objective>_verdict`
(`faster`, `slower`, `tied`, `undecided`: `platform/noise.py`). Rows recorded before
that kept the 10th-90th percentiles of the per-round ratios (`<objective>_p10`,
`<objective>_p90`): they are read as such and labelled so, never as a confidence
interval. A job's interval is its final rounds' (`verdict.best`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CI_LABEL = "95% CI"
SPREAD_LABEL = "p10-p90 of rounds"


@dataclass(frozen=True)
class Interval:
    """[lo, hi] of a ratio, what kind of interval it is, and the verdict on it."""

    lo: float
    hi: float
    outcome: str | None = None
    label: str = CI_LABEL

    def as_json(self) -> dict[str, Any]:
        return {"ci": [self.lo, self.hi], "verdict": self.outcome, "interval": self.label}


def of_trial(extra: Mapping[str, Any] | None, objective: str) -> Interval | None:
    """The interval a trial recorded for `objective` (None if it recorded none)."""
    extra = extra or {}
    ci = extra.get(f"{objective}_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci:
        outcome = extra.get(f"{objective}_verdict")
        return Interval(float(ci[0]), float(ci[1]), outcome)
    lo, hi = extra.get(f"{objective}_p10"), extra.get(f"{objective}_p90")
    if lo is not None and hi is not None:  # an old row: the spread of per-round ratios
        return Interval(float(lo), float(hi), None, SPREAD_LABEL)
    return None


def of_job(verdict: Mapping[str, Any] | None) -> Interval | None:
    """The interval of a job's best from its final rounds (None without one)."""
    best = (verdict or {}).get("best") or {}
    ci = best.get("ci")
    if not ci:
        return None
    return Interval(float(ci[0]), float(ci[1]), best.get("outcome"))


def is_ratio(objective: str) -> bool:
    """Objectives that are ratios (shown as `1.12x`)."""
    return "speedup" in objective or objective.endswith("_ratio")


def fmt_ratio(value: float | None) -> str:
    """`1.12x`; `-` for none."""
    return "-" if value is None else f"{value:.2f}x"


def fmt(value: float | None, objective: str, interval: Interval | None) -> str:
    """A value with its interval: `1.12x (95% CI 0.98-1.31, tied)`; a value without one
    as `units.fmt_value` shows it (a ratio as `1.12x`)."""
    from tunelab.units import fmt_value

    if value is None:
        return "-"
    if interval is None:
        return fmt_ratio(value) if is_ratio(objective) else fmt_value(value, objective)
    said = f"{interval.label} {interval.lo:.2f}-{interval.hi:.2f}"
    if interval.outcome:
        said += f", {interval.outcome}"
    return f"{value:.2f}x ({said})"
