"""``/admin/v1/incidents`` (HTTPS): incidents the hooks made, and the people's decisions on
pending ones. Roles as in the admin API: viewer lists and shows, revoker approves or rejects.
Every call is audited (actor, role, method, path, status); 401/403 change nothing. Errors are
RFC 9457 problem documents."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ca.errors import ErrorKind, PKIError
from response.service import Response as ResponseService

PREFIX = "/admin/v1/incidents"
CHANNEL = "admin-api"
ROLES = {"viewer": 0, "revoker": 1, "admin": 2}
_STATUS = {ErrorKind.NOT_FOUND: 404, ErrorKind.CONFLICT: 409, ErrorKind.BAD_REQUEST: 400,
           ErrorKind.UNAUTHORIZED: 401, ErrorKind.FORBIDDEN: 403, ErrorKind.UNAVAILABLE: 503}


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    source: str

    def can(self, role: str) -> bool:
        return ROLES.get(self.role, -1) >= ROLES[role]


class Authenticator(Protocol):
    def __call__(self, authorization: str | None, scope: Mapping[str, Any], source: str) -> Caller | None: ...


def token_authenticator(deployment: Any) -> Authenticator:
    """Admin bearer tokens from the store (RFC 6750 §2.1), compared by SHA-256 in the store."""

    def authenticate(authorization: str | None, scope: Mapping[str, Any], source: str) -> Caller | None:
        scheme, _, value = (authorization or "").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value or len(value) > 512:
            return None
        found = deployment.store.verify_admin_token(value)
        return Caller(found[0], found[1], source) if found and found[1] in ROLES else None

    return authenticate


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=1024)


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail}, status,
                        headers=headers, media_type="application/problem+json")


def require(role: str) -> Callable[[Request], Caller]:
    """FastAPI dependency: the authenticated caller with at least ``role`` (401 / 403 otherwise)."""

    def dependency(request: Request) -> Caller:
        source = request.client.host if request.client else ""
        caller = request.app.state.authenticate(request.headers.get("authorization"), request.scope, source)
        if caller is None:
            raise PKIError(ErrorKind.UNAUTHORIZED, "a valid admin bearer token is required")
        request.state.caller = caller
        if not caller.can(role):
            raise PKIError(ErrorKind.FORBIDDEN, f"role {caller.role} may not do this (needs {role})")
        return caller

    return dependency


Viewer = Annotated[Caller, Depends(require("viewer"))]
Revoker = Annotated[Caller, Depends(require("revoker"))]


def create_admin_app(resp: ResponseService, authenticator: Authenticator | None = None) -> FastAPI:
    auth = authenticator or token_authenticator(resp.dep)
    app = FastAPI(title="ikepki incidents", version="1", openapi_url=f"{PREFIX}/openapi.json", docs_url=None,
                  redoc_url=None)
    app.state.authenticate = auth

    @app.middleware("http")
    async def audited(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if int(request.headers.get("content-length") or 0) > 64 * 1024:
            response: Response = _problem(413, "Payload Too Large", "request body over 64 KiB")
        else:
            response = await call_next(request)
        caller: Caller | None = getattr(request.state, "caller", None)
        source = request.client.host if request.client else ""
        await anyio.to_thread.run_sync(lambda: resp.audit(
            "admin-api", caller.name if caller else "anonymous", source, channel=CHANNEL, method=request.method,
            path=request.url.path[:300], status=response.status_code, role=caller.role if caller else None))
        return response

    @app.exception_handler(PKIError)
    async def pki_error(_request: Request, exc: PKIError) -> JSONResponse:
        status = _STATUS.get(exc.kind, 500)
        headers = {"WWW-Authenticate": 'Bearer realm="ikepki-admin"'} if status == 401 else None
        return _problem(status, exc.kind.name.replace("_", " ").title(), exc.detail, headers)

    @app.get(PREFIX)
    def list_incidents(c: Viewer, status: Annotated[str | None, Query(max_length=16)] = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        return [i.wire() for i in resp.store.list(status, limit)]

    @app.get(PREFIX + "/{incident_id}")
    def show(incident_id: int, c: Viewer) -> dict[str, Any]:
        inc = resp.store.get(incident_id)
        if inc is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no incident {incident_id}")
        return inc.wire()

    @app.post(PREFIX + "/{incident_id}/approve")
    def approve(incident_id: int, c: Revoker, body: Decision | None = None) -> dict[str, Any]:
        """Execute a pending incident's plan now (beyond the guard: a person decided)."""
        return resp.engine.decide(incident_id, True, c.name, CHANNEL, c.source, body.note if body else None).wire()

    @app.post(PREFIX + "/{incident_id}/reject")
    def reject(incident_id: int, c: Revoker, body: Decision | None = None) -> dict[str, Any]:
        return resp.engine.decide(incident_id, False, c.name, CHANNEL, c.source, body.note if body else None).wire()

    return app
