"""What the query modules share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from tunelab.schema.models import TrialStatus

OK = str(TrialStatus.ok)


def aware(ts: datetime | None) -> datetime | None:
    """`ts` with its time zone; SQLite hands back naive datetimes, which are UTC."""
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


def geomean(values: Sequence[float | None]) -> float | None:
    """Geometric mean of the positive values given (None if none)."""
    xs = [x for x in values if x is not None and x > 0]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))
