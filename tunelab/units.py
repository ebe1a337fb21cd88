"""Formatting shared by the CLI and the dashboard."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def fmt_seconds(seconds: float | None, digits: int = 4) -> str:
    """A duration with a readable unit and `digits` significant figures, as the dashboard
    shows latencies: 12.35 µs, 4.567 ms, 110.6 ms, 1.234 s, 12,346 s; "-" for none."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.{digits}g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.{digits}g} ms"
    if seconds >= 10**digits:  # no exponent: whole seconds
        return f"{seconds:,.0f} s"
    return f"{seconds:.{digits}g} s"


def fmt_value(value: float | None, objective: str = "latency_s") -> str:
    """An objective's value: a duration for objectives in seconds (`*_s`), else a number."""
    if value is None:
        return "-"
    return fmt_seconds(value) if objective.endswith("_s") else f"{value:.6g}"


def fmt_age(ts: datetime | None, now: datetime | None = None) -> str:
    """How long before `now` (default: now) `ts` was, e.g. `3h ago`; naive times are UTC."""
    if ts is None:
        return "-"
    if ts.tzinfo is None:  # SQLite hands back naive datetimes
        ts = ts.replace(tzinfo=UTC)
    secs = int(((now or datetime.now(UTC)) - ts).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{max(secs, 0)}s ago"  # a clock running behind reads as just now
