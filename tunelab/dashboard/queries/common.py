"""What the query modules share."""

from __future__ import annotations

from datetime import UTC, datetime

from tunelab.schema.models import TrialStatus

OK = str(TrialStatus.ok)


def aware(ts: datetime | None) -> datetime | None:
    """`ts` with its time zone; SQLite hands back naive datetimes, which are UTC."""
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts
