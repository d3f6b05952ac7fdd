"""Injectable clock: every time comparison in this package goes through a :data:`Clock`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Aware UTC now (the production :data:`Clock`)."""
    return datetime.now(UTC)


def require_aware(moment: datetime) -> datetime:
    """Reject naive datetimes so no comparison silently mixes local time and UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    return moment.astimezone(UTC)
