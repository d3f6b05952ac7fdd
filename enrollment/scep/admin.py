"""Admin API for SCEP (HTTPS only, bearer admin token with role ``admin``):

``POST /admin/v1/scep/challenges`` ``{"profile": "machine", "ttl_seconds": 3600}`` →
``201 {"id", "challenge", "profile", "expires_at"}``: a one-time challenge password.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ca.errors import ErrorKind, PKIError
from ca.service.mounts import Receive, Scope, Send
from enrollment.scep.messages import HttpAnswer

if TYPE_CHECKING:
    from enrollment.scep.routes import ScepApp

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


def _json(status: int, obj: dict[str, Any]) -> HttpAnswer:
    return HttpAnswer(status, json.dumps(obj).encode(), "application/json")


class AdminApp:
    def __init__(self, scep: ScepApp) -> None:
        self.scep = scep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from enrollment.scep.routes import BodyTooLarge, read_body, respond

        if scope["type"] != "http":
            return
        try:
            answer = await self._handle(scope, receive, read_body)
        except BodyTooLarge:
            answer = _json(413, {"error": "request too large"})
        except PKIError as exc:
            status = {ErrorKind.UNAVAILABLE: 503, ErrorKind.UNAUTHORIZED: 401, ErrorKind.FORBIDDEN: 403}
            answer = _json(status.get(exc.kind, 400), {"error": exc.detail})
        await respond(send, answer)

    async def _handle(self, scope: Scope, receive: Receive, read_body: Any) -> HttpAnswer:
        from enrollment.scep.routes import header

        path = scope["path"].rstrip("/")
        if path != "/admin/v1/scep/challenges":
            return _json(404, {"error": "not found"})
        if scope["method"] != "POST":
            return _json(405, {"error": "method not allowed"})
        await self.scep.ready()
        name = await asyncio.to_thread(self._authenticate, header(scope, b"authorization"))
        declared = header(scope, b"content-length")
        body = await read_body(receive, MAX_ADMIN_BODY, int(declared) if declared and declared.isdigit() else None)
        try:
            request = ChallengeRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            return _json(400, {"error": f"invalid request: {exc.errors()[0]['msg']}"})
        service = self.scep.service
        profile = request.profile or service.settings.default_profile
        ttl = timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None
        challenge = await asyncio.to_thread(service.create_challenge, profile, f"admin-api:{name}", ttl)
        return _json(201, ChallengeResponse(id=challenge.id, challenge=challenge.secret, profile=challenge.profile,
                                            expires_at=challenge.expires_at.isoformat()).model_dump())

    def _authenticate(self, authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or len(token) > 512:
            raise PKIError(ErrorKind.UNAUTHORIZED, "bearer admin token required")
        found = self.scep.service.dep.store.verify_admin_token(token.strip())
        if found is None:
            raise PKIError(ErrorKind.UNAUTHORIZED, "invalid admin token")
        name, role = found
        if role != "admin":
            raise PKIError(ErrorKind.FORBIDDEN, "role admin required")
        return str(name)
