"""Admin routes of SCEP, served under ``/admin/v1/scep`` by the one admin app
(:mod:`enrollment.admin`; credentials, role check, body bound, problem documents and audit are
:mod:`ca.service.admin`'s). Role admin:

``POST /admin/v1/scep/challenges`` ``{"profile": "machine", "ttl_seconds": 3600}`` →
``201 {"id", "challenge", "profile", "expires_at"}``: a one-time challenge password
(RFC 8894 §2.3 challengePassword).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ca.errors import ErrorKind, PKIError
from ca.service.admin import Admin
from enrollment.scep.service import ScepService

MAX_ADMIN_BODY = 4096


class ChallengeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str | None = Field(default=None, max_length=32)
    ttl_seconds: int | None = Field(default=None, ge=60, le=30 * 24 * 3600)


class ChallengeResponse(BaseModel):
    id: int
    challenge: str
    profile: str
    expires_at: str


def admin_router(ready: Callable[[], Awaitable[ScepService]]) -> APIRouter:
    """``ready`` yields the SCEP service shared with the protocol app (built once, off the loop)."""
    router = APIRouter()

    @router.post("/challenges", status_code=201)
    async def create_challenge(request: Request, p: Admin) -> ChallengeResponse:
        body = await request.body()
        try:
            parsed = ChallengeRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise PKIError(ErrorKind.BAD_REQUEST, f"invalid request: {exc.errors()[0]['msg']}") from None
        service = await ready()
        profile = parsed.profile or service.settings.default_profile
        ttl = timedelta(seconds=parsed.ttl_seconds) if parsed.ttl_seconds else None
        challenge = await asyncio.to_thread(service.create_challenge, profile, f"admin-api:{p.name}", ttl)
        return ChallengeResponse(id=challenge.id, challenge=challenge.secret, profile=challenge.profile,
                                 expires_at=challenge.expires_at.isoformat())

    return router
