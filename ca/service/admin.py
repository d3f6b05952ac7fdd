"""The one admin surface (``/admin/v1``, HTTPS only): who is calling, which role a route needs,
bounded request bodies, RFC 9457 problem documents, and one audit record for every call whatever
its outcome (200, 401, 403, 404, 413, 422, 500).

Any package contributes admin routes through the entry point group ``ikepki.admin_routes``: a
callable ``admin_routes(deployment) -> list[AdminRoutes]`` (a FastAPI router, the path prefix under
``/admin/v1`` and a body limit). ``enrollment.admin`` serves them all in one FastAPI app wrapped by
:class:`AdminGate`; routes declare the role they need with :data:`Viewer`, :data:`Revoker` or
:data:`Admin` and never check credentials themselves.

Credentials: a bearer token (``Authorization: Bearer …``, RFC 6750 §2.1) checked against the
store's hashed admin tokens, or a TLS client certificate mapped to a role in ``admin.cert_roles``
(profile -> subject -> role): the certificate must be the store's own record of that serial (same
DER), valid, and issued under that profile, so another profile's certificate with the same subject
does not match. A presented token decides alone (a wrong token is not rescued by a
certificate). Roles are ordered viewer < revoker < admin. 401 carries ``WWW-Authenticate: Bearer``
(RFC 6750 §3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import anyio
from cryptography import x509
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ca.clock import Clock
from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertStatus
from ca.service.caller import bearer_token, client_ip
from ca.service.mounts import Receive, Scope, Send

if TYPE_CHECKING:
    from ca.ports import ServiceKeys

log = logging.getLogger("ikepki.admin")

PREFIX = "/admin/v1"
CHANNEL = "admin-api"
ROUTES_GROUP = "ikepki.admin_routes"
ROLES = {"viewer": 0, "revoker": 1, "admin": 2}
MAX_TOKEN = 512
CALL_STATE = "ikepki.admin"  # scope key: what the gate records about the call (the principal)
STATUS = {ErrorKind.NOT_FOUND: 404, ErrorKind.CONFLICT: 409, ErrorKind.BAD_REQUEST: 400, ErrorKind.BAD_CSR: 400,
          ErrorKind.REJECTED_IDENTIFIER: 400, ErrorKind.BLOCKED: 403, ErrorKind.UNAUTHORIZED: 401,
          ErrorKind.FORBIDDEN: 403, ErrorKind.UNAVAILABLE: 503, ErrorKind.CONFIG: 500, ErrorKind.INTERNAL: 500}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ikepki-admin"'}


# -- who is calling ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    method: str  # token | certificate
    source: str

    def can(self, role: str) -> bool:
        return ROLES.get(self.role, -1) >= ROLES[role]


class AdminCredentialStore(Protocol):
    """The core tables the authenticator reads (admin tokens, certificates)."""

    def verify_admin_token(self, token: str) -> tuple[str, str] | None: ...

    def get(self, serial: int) -> CertificateInfo | None: ...


class AdminAuthenticator:
    def __init__(self, store: AdminCredentialStore, clock: Clock,
                 cert_roles: Mapping[str, Mapping[str, str]]) -> None:
        self.store, self.clock = store, clock
        self.cert_roles = {profile: dict(subjects) for profile, subjects in cert_roles.items()}

    def authenticate(self, authorization: str | None, scope: Mapping[str, Any], source: str) -> Principal | None:
        """A presented token decides alone (a wrong token is not rescued by a certificate)."""
        if authorization:
            token = bearer_token(authorization, MAX_TOKEN)
            found = self.store.verify_admin_token(token) if token else None
            return Principal(found[0], found[1], "token", source) if found and found[1] in ROLES else None
        return self._certificate_principal(scope, source)

    def _certificate_principal(self, scope: Mapping[str, Any], source: str) -> Principal | None:
        der = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_der")
        if not der or not self.cert_roles:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        now = self.clock.now()
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            return None  # the TLS layer does not check validity periods
        subject = cert.subject.rfc4514_string()
        if not any(subject in subjects for subjects in self.cert_roles.values()):
            return None
        info = self.store.get(cert.serial_number)
        if info is None or info.der != der or info.status is not CertStatus.valid:
            return None  # not this CA's record of it (fail closed), or revoked / held
        role = self.cert_roles.get(info.profile, {}).get(subject)
        if role not in ROLES:
            return None  # the subject is mapped under another profile only
        return Principal(subject, role, "certificate", source)


def require(role: str) -> Callable[[Request], Principal]:
    """FastAPI dependency: the authenticated caller, at least ``role`` (401 / 403 otherwise).
    The app serving the route keeps an :class:`AdminAuthenticator` in ``app.state.admin_auth``."""

    def dependency(request: Request) -> Principal:
        auth: AdminAuthenticator = request.app.state.admin_auth
        p = auth.authenticate(request.headers.get("authorization"), request.scope, client_ip(request.scope))
        if p is None:
            raise PKIError(ErrorKind.UNAUTHORIZED, "a valid admin bearer token or client certificate is required")
        request.scope.setdefault(CALL_STATE, {})["principal"] = p
        if not p.can(role):
            raise PKIError(ErrorKind.FORBIDDEN, f"role {p.role} may not do this (needs {role})")
        return p

    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Revoker = Annotated[Principal, Depends(require("revoker"))]
Admin = Annotated[Principal, Depends(require("admin"))]


# -- contributions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AdminRoutes:
    """Routes a package adds under ``/admin/v1<prefix>`` (e.g. ``/est``)."""

    prefix: str
    router: APIRouter
    max_body_bytes: int | None = None  # None: the admin default (admin.max_body_bytes)
    tag: str = ""


def load_admin_routes(deployment: ServiceKeys) -> list[AdminRoutes]:
    """Every installed package's admin routes (entry point group ``ikepki.admin_routes``)."""
    out: list[AdminRoutes] = []
    for ep in sorted(entry_points(group=ROUTES_GROUP), key=lambda e: e.name):
        try:
            factory = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name is not None and ep.value.split(":")[0].startswith(exc.name):
                continue  # the plug-in is not installed
            raise
        out += factory(deployment)
    return out


# -- errors: RFC 9457 problem documents --------------------------------------------------------

def problem(status: int, detail: str, title: str | None = None, headers: Mapping[str, str] | None = None,
            **extensions: Any) -> JSONResponse:
    """An RFC 9457 problem document (``application/problem+json``; §3.1 members, ``about:blank`` type)."""
    from http import HTTPStatus

    body = {"type": "about:blank", "title": title or HTTPStatus(status).phrase, "status": status, "detail": detail,
            **extensions}
    return JSONResponse(body, status, headers=dict(headers) if headers else None,
                        media_type="application/problem+json")


class Problem(BaseModel):
    """RFC 9457 §3.1 members of the admin API's problem documents (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


# documented on every admin route (OpenAPI); 422 replaces FastAPI's own validation schema
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": what} for status, what in (
        (401, "no or unknown credential (WWW-Authenticate: Bearer)"), (403, "the caller's role is too low"),
        (404, "no such resource"), (413, "request body too large"), (422, "invalid request"),
        (500, "internal error (audited)"))}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app answers is a problem document: PKIError, validation (422), routing
    (404/405), oversized bodies (413) and anything unexpected (500, without internals)."""

    @app.exception_handler(PKIError)
    async def pki_error(_request: Request, exc: PKIError) -> JSONResponse:
        status = STATUS.get(exc.kind, 500)
        detail = exc.detail if status < 500 or exc.kind is ErrorKind.UNAVAILABLE else "internal error"
        return problem(status, detail, exc.kind.name.replace("_", " ").title(), CHALLENGE if status == 401 else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return problem(422, f"{'.'.join(first['loc'])}: {first['msg']}"[:300], errors=errors[:20])

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("admin API: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return problem(500, "internal error")


# -- the gate: body bound and audit of every call ----------------------------------------------

class AuditSink(Protocol):
    def append(self, at: datetime, actor: str, action: str, channel: str, **fields: Any) -> None: ...


class AuditStore(Protocol):
    def add_audit(self, at: datetime, actor: str, action: str, channel: str, source: str = "",
                  serial: int | None = None, **detail: Any) -> None: ...


class AdminGate:
    """The outermost layer of the admin app. Refuses bodies over the route's limit with 413
    (declared or streamed), answers anything unexpected with a 500 problem document, and audits
    every call (actor, role, method, path, status, client address) to the audit table and log
    after it is answered — refused ones included."""

    def __init__(self, app: Any, store: AuditStore, audit: AuditSink, clock: Clock, default_limit: int,
                 limits: Sequence[tuple[str, int]] = (), action: str = "admin-api", channel: str = CHANNEL) -> None:
        self.app, self.store, self.audit, self.clock = app, store, audit, clock
        self.action, self.channel = action, channel  # another front end (the console) records itself
        self.default_limit = default_limit
        self.limits = sorted(limits, key=lambda pl: len(pl[0]), reverse=True)  # longest prefix first

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[CALL_STATE] = {}
        status = 0

        async def tracked(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        seen = 0

        async def bounded() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            return message

        try:
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                await problem(413, f"request body over {limit} bytes")(scope, receive, tracked)
            else:
                await self.app(scope, bounded, tracked)
        except Exception as exc:  # answered here when the app could not; recorded below either way
            if status == 0:
                too_large = isinstance(exc, BodyTooLarge)
                if not too_large:
                    log.error("admin API: %s: %s", type(exc).__name__, exc, exc_info=exc)
                await (problem(413, f"request body over {limit} bytes") if too_large
                       else problem(500, "internal error"))(scope, receive, tracked)
            elif status < 500:
                status = 500
        finally:
            await anyio.to_thread.run_sync(self._record, scope, status or 500)

    def _record(self, scope: Scope, status: int) -> None:
        p: Principal | None = scope.get(CALL_STATE, {}).get("principal")
        actor = p.name if p else "anonymous"
        source = client_ip(scope)
        fields: dict[str, Any] = {"method": scope.get("method", ""), "path": str(scope.get("path", ""))[:300],
                                  "status": status, "role": p.role if p else None, "auth": p.method if p else None}
        now = self.clock.now()
        try:
            self.store.add_audit(now, actor, self.action, self.channel, source, **fields)
            self.audit.append(now, actor, self.action, self.channel, source=source, **fields)
        except PKIError as exc:
            log.error("audit of admin call failed: %s", exc.detail)
        except OSError as exc:  # the answer is sent: say so loudly, do not also break the connection
            log.error("audit of admin call failed: %s", exc)
