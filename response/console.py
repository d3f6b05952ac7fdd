"""The console's read-only panel of pending incidents (entry point ``ikepki.console_incidents:
response``): the console imports only the core, so it reads incidents through this callable."""

from __future__ import annotations

from typing import Any

from response.store import ResponseStore


def pending_incidents(deployment: Any, limit: int = 100) -> list[dict[str, Any]]:
    """Pending incidents, newest first, as plain values (``Incident.wire()``)."""
    return [i.wire() for i in ResponseStore(deployment.db).list("pending", limit)]
