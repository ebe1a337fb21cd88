"""Formatting shared by the CLI and the dashboard."""

from __future__ import annotations


def fmt_seconds(seconds: float | None) -> str:
    """A duration with a readable unit: 12.3 µs, 4.567 ms, 1.23 s; '-' for none."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.2f} s"
