"""HTTP edge of the EST server (RFC 7030 §3.2.2 URIs, §4 operations, RFC 8951 encoding) and the
admin routes for MDM registrations (``/admin/v1/est``, served by the one admin app).

Status codes (§4.2.3): 400 malformed request, 401 + ``WWW-Authenticate: Basic realm="ikepki EST"``
when credentials are missing or wrong, 403 not allowed, 404 unknown label/operation, 413 body
too large, 415 wrong Content-Type, 202 + ``Retry-After`` while waiting for manual approval,
503 + Retry-After when the HSM or database is unavailable.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ca.errors import ErrorKind, PKIError
from ca.ports import ServiceKeys
from ca.service.admin import AdminRoutes
from ca.service.bodies import BodyError, BodyTooLarge
from ca.service.bodies import read_body as read_bounded
from ca.service.caller import bearer_token, client_ip
from ca.service.mounts import HTTPS, HttpMount, PerDeployment
from enrollment.est import keyprotect, wire
from enrollment.est.auth import Throttled
from enrollment.est.service import EnrollCall, EnrollOutcome, EstService
from enrollment.est.settings import EstSettings

PREFIX = "/.well-known/est"
REALM = 'Basic realm="ikepki EST"'
OPERATIONS = {"cacerts": "GET", "csrattrs": "GET", "simpleenroll": "POST", "simplereenroll": "POST",
              "serverkeygen": "POST"}
STATUS = {ErrorKind.BAD_REQUEST: 400, ErrorKind.BAD_CSR: 400, ErrorKind.REJECTED_IDENTIFIER: 403,
          ErrorKind.UNAUTHORIZED: 401, ErrorKind.FORBIDDEN: 403, ErrorKind.BLOCKED: 403, ErrorKind.NOT_FOUND: 404,
          ErrorKind.CONFLICT: 409, ErrorKind.UNAVAILABLE: 503, ErrorKind.CONFIG: 500, ErrorKind.INTERNAL: 500}
log = logging.getLogger("ikepki.est")


class HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def text(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response((detail.rstrip() + "\n").encode(), status, headers=headers,
                    media_type="text/plain; charset=utf-8")


def error_response(exc: PKIError | HttpError) -> Response:
    if isinstance(exc, HttpError):
        return text(exc.status, exc.detail)
    status = STATUS.get(exc.kind, 500)
    headers = {"WWW-Authenticate": REALM} if status == 401 else {"Retry-After": "30"} if status == 503 else None
    detail = exc.detail if status < 500 or status == 503 else "internal error"
    return text(status, detail, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, bounded (:func:`ca.service.bodies.read_body`): a declared or actual length
    above ``limit`` is a 413, an invalid Content-Length a 400."""
    try:
        return await read_bounded(request.receive, limit, request.headers.get("content-length"))
    except BodyTooLarge as exc:
        raise HttpError(413, str(exc)) from None
    except BodyError as exc:
        raise HttpError(400, str(exc)) from None


def certs_only_response(der: bytes) -> Response:
    return Response(wire.b64_line(der), 200, media_type=wire.PKCS7_CERTS_ONLY,
                    headers={"Content-Transfer-Encoding": "base64"})


def outcome_response(operation: str, outcome: EnrollOutcome) -> Response:
    if outcome.retry_after is not None:
        return text(202, f"enrollment {outcome.pending_id} is waiting for approval; retry later",
                    {"Retry-After": str(outcome.retry_after)})
    assert outcome.issued is not None
    pkcs7 = wire.certs_only([outcome.issued.certificate])
    if operation != "serverkeygen":
        return certs_only_response(pkcs7)
    assert outcome.private_key_der is not None
    key_type = keyprotect.SERVER_GENERATED_KEY if outcome.key_encrypted else wire.PKCS8
    ctype, body = wire.multipart_mixed([wire.MultipartPart(key_type, wire.b64_line(outcome.private_key_der)),
                                        wire.MultipartPart(wire.PKCS7_CERTS_ONLY, wire.b64_line(pkcs7))])
    return Response(body, 200, media_type=ctype)


class EstApp:
    """The ``/.well-known/est`` endpoints."""

    def __init__(self, service: EstService, settings: EstSettings) -> None:
        self.service = service
        self.settings = settings
        self.app = Starlette(routes=[Route(PREFIX + "/{path:path}", self.handle, methods=["GET", "POST", "HEAD"])])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except (PKIError, HttpError) as exc:
            return error_response(exc)
        except Exception:  # never leak internals; the log has the trace
            log.exception("EST request failed")
            return text(500, "internal error")

    async def _dispatch(self, request: Request) -> Response:
        label, operation = _split(request.path_params["path"])
        method = OPERATIONS.get(operation)
        if method is None:
            raise HttpError(404, f"unknown EST operation {operation!r}")
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return Response(f"{operation} needs {method}\n".encode(), 405, headers={"Allow": method},
                            media_type="text/plain; charset=utf-8")
        if operation == "cacerts":
            return certs_only_response(await anyio.to_thread.run_sync(self.service.cacerts, label))
        if operation == "csrattrs":
            der = await anyio.to_thread.run_sync(self.service.csrattrs, label)
            return Response(wire.b64_line(der), 200, media_type=wire.CSRATTRS,
                            headers={"Content-Transfer-Encoding": "base64"})
        return await self._enroll(request, label, operation)

    async def _enroll(self, request: Request, label: str | None, operation: str) -> Response:
        self.service.label(label)  # 404 before reading a body for an unknown label
        if wire.media_type(request.headers.get("content-type")) != wire.PKCS10:
            raise HttpError(415, f"Content-Type must be {wire.PKCS10} (RFC 7030 §4.2.1)")
        body = await read_body(request, self.settings.max_body_bytes)
        token = bearer_token(request.headers.get("authorization"))  # bounded by enrollment.oidc (invalid_token)
        if token is not None:
            return await self._enroll_bearer(request, label, operation, body, token)
        basic = wire.parse_basic(request.headers.get("authorization"))
        checked = None
        if basic is not None:  # PBKDF2 throttled in the event loop, not on a held worker thread
            try:
                checked = await self.service.auth.check_basic(*basic)
            except Throttled:
                return text(429, "too many password checks in progress: retry later", {"Retry-After": "1"})
        call = EnrollCall(operation=operation, label=label, csr_der=wire.decode_pkcs10_body(body), basic=basic,
                          client_cert=self._client_cert(request), source=client_ip(request.scope),
                          basic_checked=checked)
        outcome = await anyio.to_thread.run_sync(self.service.enroll, call)
        return outcome_response(operation, outcome)

    async def _enroll_bearer(self, request: Request, label: str | None, operation: str, body: bytes,
                             token: str) -> Response:
        """RFC 7030 §3.2.3 allows other HTTP authentication: an identity provider's ID token as an
        RFC 6750 bearer credential enrolls a ``user``-profile label (MDM/EST tooling carrying the
        IdP's token), through :mod:`enrollment.oidc` (same checks, one-time redemption, names)."""
        from enrollment.oidc.routes import user_service
        from enrollment.oidc.service import EnrollCall as TokenCall
        from enrollment.oidc.tokens import TokenError

        _, label_settings = self.service.label(label)
        if operation not in ("simpleenroll", "simplereenroll") or label_settings.profile != "user":
            raise HttpError(403, "a Bearer token enrolls only labels of the user profile (simpleenroll)")
        users = user_service(self.service.dep)
        if users is None:
            raise HttpError(403, "no identity provider is configured for Bearer tokens")
        call = TokenCall(id_token=token, csr=wire.decode_pkcs10_body(body), source=client_ip(request.scope))
        try:
            issued, _ = await anyio.to_thread.run_sync(users.enroll, call)
        except TokenError as exc:
            return text(401, exc.detail, {"WWW-Authenticate": 'Bearer realm="ikepki EST", error="invalid_token"'})
        return certs_only_response(wire.certs_only([issued.certificate]))

    def _client_cert(self, request: Request) -> x509.Certificate | None:
        """The TLS client certificate; behind an ingress (only when configured) the forwarded one."""
        tls = request.scope.get("extensions", {}).get("tls") or {}
        der = tls.get("client_cert_der")
        if der:
            return x509.load_der_x509_certificate(der)
        header = self.settings.trusted_proxy_header
        if header:
            value = request.headers.get(header)
            if value:
                return wire.cert_from_proxy_header(value)
        return None


def _split(path: str) -> tuple[str | None, str]:
    parts = [p for p in path.split("/") if p]
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise HttpError(404, "EST paths are /.well-known/est/[<label>/]<operation>")


_SERVICES: PerDeployment[EstService] = PerDeployment()


def est_service(deployment: ServiceKeys) -> EstService | None:
    """The deployment's one EstService (shared by the EST app and its admin routes); None if EST is off."""
    settings = deployment.settings_for(EstSettings, "est")
    if not settings.enabled:
        return None
    return _SERVICES.get(deployment, lambda: EstService(deployment, settings))


def http_mounts(deployment: ServiceKeys) -> list[HttpMount]:
    service = est_service(deployment)
    if service is None:
        return []
    return [HttpMount(PREFIX, EstApp(service, service.settings), frozenset({HTTPS}), "est")]


def admin_routes(deployment: ServiceKeys) -> list[AdminRoutes]:
    """Entry point ``ikepki.admin_routes: est``: ``/admin/v1/est/…``."""
    from enrollment.est.admin import MAX_ADMIN_BODY, admin_router

    service = est_service(deployment)
    if service is None:
        return []
    return [AdminRoutes("/est", admin_router(service), MAX_ADMIN_BODY, "est")]
