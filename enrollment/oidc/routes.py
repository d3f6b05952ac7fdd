"""HTTP edge of user enrollment (HTTPS listener, ``/user/v1``):

- ``GET /user/v1/providers``: the enabled providers' issuer, public client id and scopes (what
  ``ikepki user enroll`` needs for the RFC 8628 device grant);
- ``POST /user/v1/certificates``: ``{"id_token", "csr", "provider"?, "device"?}`` (the token may
  instead come as ``Authorization: Bearer``, RFC 6750 §2.1) -> 201 ``{"serial", "certificate",
  "chain", "not_after", "identity", "roles"}``;
- ``POST /user/v1/backchannel-logout/{provider}``: ``logout_token`` form parameter (OpenID Connect
  Back-Channel Logout 1.0 §2.5) -> 200 with ``Cache-Control: no-store`` (§2.8), 400 when invalid.

Every error is an RFC 9457 problem document; a refused token is 401 with
``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3.1).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import anyio
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ca.errors import ErrorKind, PKIError
from ca.ports import CoreServices
from ca.service.admin import STATUS, AdminRoutes, problem
from ca.service.bodies import BodyError as BoundedBodyError
from ca.service.bodies import BodyTooLarge
from ca.service.bodies import read_body as read_bounded
from ca.service.caller import bearer_token, client_ip
from ca.service.mounts import HTTPS, HttpMount, PerDeployment
from enrollment.oidc.service import EnrollCall, UserCertService
from enrollment.oidc.settings import OidcSettings
from enrollment.oidc.tokens import TokenError

PREFIX = "/user/v1"
log = logging.getLogger("ikepki.oidc")


class BodyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


async def read_body(request: Request, limit: int) -> bytes:
    """The body through the one bounded reader (:mod:`ca.service.bodies`): a 413 over ``limit``, a
    400 for an invalid Content-Length (RFC 9110 §8.6) or a client gone before the end."""
    try:
        return await read_bounded(request.receive, limit, request.headers.get("content-length"))
    except BodyTooLarge:
        raise BodyError(413, f"request body over {limit} bytes") from None
    except BoundedBodyError as exc:
        raise BodyError(400, str(exc)) from None


def error_response(exc: Exception, logout: bool = False) -> Response:
    if isinstance(exc, BodyError):
        return problem(exc.status, exc.detail)
    if isinstance(exc, TokenError):
        if logout:  # Back-Channel Logout §2.8: 400, OAuth error members
            return problem(400, exc.detail, error="invalid_request", error_description=exc.detail)
        return problem(401, exc.detail, "Invalid Token",
                       {"WWW-Authenticate": 'Bearer realm="ikepki-user", error="invalid_token"'})
    if isinstance(exc, PKIError):
        status = STATUS.get(exc.kind, 500)
        if logout and status in (401, 403, 404):
            status = 400
        detail = exc.detail if status < 500 or exc.kind is ErrorKind.UNAVAILABLE else "internal error"
        return problem(status, detail, exc.kind.name.replace("_", " ").title(),
                       {"Retry-After": "10"} if status == 503 else None)
    log.error("user enrollment: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return problem(500, "internal error")


class UserApp:
    def __init__(self, service: UserCertService) -> None:
        self.service = service
        self.app = Starlette(routes=[
            Route(PREFIX + "/providers", self.providers, methods=["GET"]),
            Route(PREFIX + "/certificates", self.certificates, methods=["POST"]),
            Route(PREFIX + "/backchannel-logout/{provider}", self.logout, methods=["POST"]),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def providers(self, request: Request) -> Response:
        return JSONResponse(self.service.public_providers())

    async def certificates(self, request: Request) -> Response:
        try:
            body = await read_body(request, self.service.settings.max_body_bytes)
            call = self._enroll_call(request, body)
            issued, identity = await anyio.to_thread.run_sync(self.service.enroll, call)
        except Exception as exc:  # every refusal is a problem document; nothing changed
            return error_response(exc)
        chain = b"".join(c.public_bytes(Encoding.PEM) for c in issued.chain).decode()
        return JSONResponse({"serial": issued.info.serial_hex,
                             "certificate": issued.certificate.public_bytes(Encoding.PEM).decode(),
                             "chain": chain, "not_after": issued.info.not_after.isoformat(),
                             "identity": identity.uri, "email": identity.email, "roles": list(identity.roles),
                             "groups": list(identity.groups)}, 201)

    def _enroll_call(self, request: Request, body: bytes) -> EnrollCall:
        if (request.headers.get("content-type") or "").split(";")[0].strip().lower() != "application/json":
            raise BodyError(415, "Content-Type must be application/json")
        try:
            doc = json.loads(body)
        except ValueError:
            raise PKIError(ErrorKind.BAD_REQUEST, "body is not JSON") from None
        if not isinstance(doc, dict):
            raise PKIError(ErrorKind.BAD_REQUEST, "body must be a JSON object")
        unknown = set(doc) - {"id_token", "csr", "provider", "device"}
        if unknown:
            raise PKIError(ErrorKind.BAD_REQUEST, f"unknown members: {', '.join(sorted(unknown))[:200]}")
        token = doc.get("id_token")
        header = request.headers.get("authorization")
        if header:
            bearer = bearer_token(header)  # bounded by the service (max_token_bytes, invalid_token)
            if bearer is None and token is None:
                raise TokenError("Authorization must be 'Bearer <ID token>'")
            token = token or bearer
        for member, value in (("id_token", token), ("csr", doc.get("csr"))):
            if not isinstance(value, str) or not value:
                raise PKIError(ErrorKind.BAD_REQUEST, f"{member} is required (a string)")
        for member in ("provider", "device"):
            if doc.get(member) is not None and (not isinstance(doc[member], str) or len(doc[member]) > 255):
                raise PKIError(ErrorKind.BAD_REQUEST, f"{member} must be a string of at most 255 characters")
        return EnrollCall(id_token=str(token), csr=str(doc["csr"]).encode(), provider=doc.get("provider"),
                          device=doc.get("device"), source=client_ip(request.scope))

    async def logout(self, request: Request) -> Response:
        try:
            ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise BodyError(415, "Content-Type must be application/x-www-form-urlencoded (§2.5)")
            body = await read_body(request, self.service.settings.max_token_bytes + 1024)
            form = parse_qs(body.decode("ascii", "replace"), max_num_fields=10)
            tokens = form.get("logout_token") or []
            if len(tokens) != 1:
                raise TokenError("exactly one logout_token parameter is required")
            done = await anyio.to_thread.run_sync(self.service.backchannel_logout, request.path_params["provider"],
                                                  tokens[0], client_ip(request.scope))
        except Exception as exc:
            return error_response(exc, logout=True)
        return JSONResponse({"certificates": [d.serial_hex for d in done]}, 200, headers={"Cache-Control": "no-store"})


_SERVICES: PerDeployment[UserCertService] = PerDeployment()


def user_service(deployment: CoreServices) -> UserCertService | None:
    """The deployment's one service (shared by the user app and its admin routes); None when off."""
    settings = deployment.settings_for(OidcSettings, "oidc")
    if not settings.enabled or not settings.providers:
        return None
    return _SERVICES.get(deployment, lambda: UserCertService(deployment, settings))


def http_mounts(deployment: CoreServices) -> list[HttpMount]:
    """Entry point ``ikepki.http: oidc``."""
    service = user_service(deployment)
    if service is None:
        return []
    return [HttpMount(PREFIX, UserApp(service), frozenset({HTTPS}), "oidc")]


def admin_routes(deployment: CoreServices) -> list[AdminRoutes]:
    """Entry point ``ikepki.admin_routes: oidc``: ``/admin/v1/users/…``."""
    from enrollment.oidc.admin import admin_router

    return [AdminRoutes("/users", admin_router(deployment), 16 * 1024, "users")]
