"""The console's incident panel (entry point ``ikepki.console_incidents: response``): the console
imports only the core, so it lists pending incidents and records people's decisions through
this object (plain values in, plain values out)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from ca.ports import ServiceKeys
from response.service import Response


class IncidentPanel:
    def __init__(self, deployment: ServiceKeys) -> None:
        self.dep = deployment

    @cached_property
    def response(self) -> Response:
        return Response(self.dep)

    def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        """Pending incidents, newest first, as plain values (``Incident.wire()``)."""
        return [i.wire() for i in self.response.store.list("pending", limit)]

    def decide(self, incident_id: int, approve: bool, actor: str, channel: str, source: str = "",
               note: str | None = None) -> dict[str, Any]:
        """Approve (execute the parked plan now) or reject a pending incident; the engine audits it.
        PKIError NOT_FOUND / CONFLICT (not pending) as from the admin API."""
        return self.response.engine.decide(incident_id, approve, actor, channel, source, note).wire()


def panel(deployment: ServiceKeys) -> IncidentPanel:
    return IncidentPanel(deployment)
