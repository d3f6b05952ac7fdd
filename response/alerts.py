"""The domain object every source format is turned into: one alert with flat string fields."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_FIELDS = 256
MAX_KEY = 128
MAX_VALUE = 1024
MAX_DEPTH = 4


class AlertStatus(enum.Enum):
    firing = "firing"
    resolved = "resolved"


@dataclass(frozen=True)
class Alert:
    """One alert from one source. ``fingerprint`` is stable between firing and resolved (the
    key a resolved alert releases holds by); ``fields`` are dotted names -> strings."""

    source: str
    format: str
    fingerprint: str
    status: AlertStatus
    fields: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None


def flatten(value: Any, prefix: str = "", out: dict[str, str] | None = None, depth: int = 0) -> dict[str, str]:
    """JSON object -> ``{"a.b": "text"}``; scalars only, bounded in count, depth and size
    (longer values are dropped, not truncated: a truncated device name could match another)."""
    out = {} if out is None else out
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return out
        for key, inner in value.items():
            if not isinstance(key, str) or len(key) > MAX_KEY:
                continue
            flatten(inner, f"{prefix}.{key}" if prefix else key, out, depth + 1)
    elif isinstance(value, bool):
        _put(out, prefix, "true" if value else "false")
    elif isinstance(value, str | int | float):
        _put(out, prefix, str(value))
    return out


def _put(out: dict[str, str], key: str, value: str) -> None:
    if key and len(out) < MAX_FIELDS and len(value) <= MAX_VALUE:
        out[key] = value
