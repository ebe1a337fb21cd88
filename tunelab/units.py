"""Formatting shared by the CLI and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime


def fmt_seconds(seconds: float | None) -> str:
    """A duration with a readable unit: 12.3 µs, 4.567 ms, 1.23 s; '-' for none."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.2f} s"


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
