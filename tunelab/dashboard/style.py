"""How every chart and table of the dashboard looks: one colour-blind-safe palette,
legends that sit above the plot (never over data), readable log axes, and values in
human units.

Pages build their Plotly figures and then call `finish(fig, ...)`; table cells use
`fmt_latency` / `fmt_number` so a latency is never shown as `6.291e-3` beside `110.581`.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from tunelab.units import fmt_seconds

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms
# of colour blindness. Black is left out (it is the text colour).
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#999999",  # grey
)
OK_COLOUR = "#009E73"
FAILED_COLOUR = "#D55E00"


def finish(
    fig: go.Figure,
    *,
    height: int = 380,
    x_log: bool = False,
    y_log: bool = False,
    legend: bool = True,
) -> go.Figure:
    """Apply the shared look: palette, a horizontal legend above the plot area, log axes
    with plain-number ticks (`1`, `2`, `5`, `10`, not `1e-3`)."""
    fig.update_layout(
        colorway=list(PALETTE),
        height=height,
        margin={"t": 40, "l": 10, "r": 10, "b": 10},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
    )
    if x_log:
        fig.update_xaxes(type="log", dtick="D2", tickformat="~g")
    if y_log:
        fig.update_yaxes(type="log", dtick="D2", tickformat="~g")
    return fig


def latency_unit(values_s: list[float]) -> tuple[str, float]:
    """One unit for a set of latencies (in seconds): ('ms', 1e3) or ('µs', 1e6) or ('s', 1),
    chosen by their median, so a chart's axis reads 1-4 digits before the point."""
    finite = sorted(v for v in values_s if v is not None and math.isfinite(v) and v > 0)
    if not finite:
        return "ms", 1e3
    mid = finite[len(finite) // 2]
    if mid < 1e-3:
        return "µs", 1e6
    if mid < 1:
        return "ms", 1e3
    return "s", 1.0


def fmt_number(x: Any, digits: int = 4) -> str:
    """A number with `digits` significant figures, blank for none/NaN (never 'None')."""
    if x is None:
        return ""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    if not math.isfinite(x):
        return ""
    return f"{x:.{digits}g}"


def fmt_latency(seconds: float | None, digits: int = 4) -> str:
    """A latency for a table cell: `units.fmt_seconds` (12.35 µs, 4.567 ms, 110.6 ms,
    1.234 s), blank for none."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    return fmt_seconds(seconds, digits)
