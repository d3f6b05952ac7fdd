"""Time for this package: the house :class:`ca.clock.Clock` (``.now()`` → aware UTC) plus a guard."""

from __future__ import annotations

from datetime import UTC, datetime

from ca.clock import Clock, FixedClock, SystemClock

__all__ = ["Clock", "FixedClock", "SystemClock", "require_aware"]


def require_aware(moment: datetime) -> datetime:
    """Reject naive datetimes so no comparison silently mixes local time and UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    return moment.astimezone(UTC)
