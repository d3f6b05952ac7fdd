"""``/admin/v1/incidents``: incidents the hooks made, and people's decisions on pending ones,
contributed to the one admin surface (entry point ``ikepki.admin_routes: incidents``). The admin
gate authenticates (bearer token or mapped client certificate), bounds bodies, answers RFC 9457
problems and audits every call; routes declare their role: viewer lists and shows, revoker
approves or rejects."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ca.errors import ErrorKind, PKIError
from ca.ports import ServiceKeys
from ca.service.admin import CHANNEL, PROBLEM_RESPONSES, AdminRoutes, Revoker, Viewer
from response.service import Response

# a database integer key: a larger path value is a 422, not an OverflowError / DataError (500)
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1)]

MAX_BODY = 16 * 1024


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=1024)


def admin_router(resp: Response) -> APIRouter:
    router = APIRouter(responses=PROBLEM_RESPONSES)

    @router.get("")
    async def list_incidents(p: Viewer, status: Annotated[str | None, Query(max_length=16)] = None,
                             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Incidents, newest first (``status``: pending, executed, approved, rejected, …)."""
        return [i.wire() for i in await anyio.to_thread.run_sync(resp.store.list, status, limit)]

    @router.get("/{incident_id}")
    async def show(incident_id: IncidentId, p: Viewer) -> dict[str, Any]:
        inc = await anyio.to_thread.run_sync(resp.store.get, incident_id)
        if inc is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no incident {incident_id}")
        return inc.wire()

    @router.post("/{incident_id}/approve")
    async def approve(incident_id: IncidentId, p: Revoker, body: Decision | None = None) -> dict[str, Any]:
        """Execute a pending incident's plan now (beyond the guard: a person decided); 409 if not pending."""
        inc = await anyio.to_thread.run_sync(resp.engine.decide, incident_id, True, p.name, CHANNEL, p.source,
                                             body.note if body else None)
        return inc.wire()

    @router.post("/{incident_id}/reject")
    async def reject(incident_id: IncidentId, p: Revoker, body: Decision | None = None) -> dict[str, Any]:
        inc = await anyio.to_thread.run_sync(resp.engine.decide, incident_id, False, p.name, CHANNEL, p.source,
                                             body.note if body else None)
        return inc.wire()

    return router


def admin_routes(deployment: ServiceKeys) -> list[AdminRoutes]:
    """Entry point ``ikepki.admin_routes: incidents``."""
    return [AdminRoutes("/incidents", admin_router(Response(deployment)), MAX_BODY, "incidents")]
