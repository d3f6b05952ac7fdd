"""HTTP binding of SCEP (RFC 8894 §4.1): ``GET|POST /scep[/<profile>][/pkiclient.exe]?operation=…``.

A bare ASGI app (no framework on this path), mounted on both listeners. Bodies and query
strings are bounded before anything is parsed; blocking work (HSM, database, webhook) runs in
a worker thread. Its admin route ``POST /admin/v1/scep/challenges`` is served by the one admin
app (entry point ``ikepki.admin_routes``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
from urllib.parse import parse_qs

from ca.errors import ErrorKind, PKIError
from ca.ports import ServiceKeys
from ca.service.admin import AdminRoutes
from ca.service.bodies import BodyError, BodyTooLarge
from ca.service.bodies import read_body as read_bounded
from ca.service.caller import client_ip
from ca.service.mounts import HTTP, HTTPS, HttpMount, Receive, Scope, Send
from enrollment.scep.messages import HttpAnswer
from enrollment.scep.service import ScepService

log = logging.getLogger("ikepki.scep.http")
PREFIX = "/scep"
MAX_QUERY_FIELDS = 8


async def respond(send: Send, answer: HttpAnswer, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": answer.status,
                "headers": [(b"content-type", answer.content_type.encode()),
                            (b"content-length", str(len(answer.body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else answer.body})


def _text(status: int, text: str) -> HttpAnswer:
    return HttpAnswer(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def decode_message(raw: str | bytes) -> bytes:
    """The base64 ``message`` of a GET PKIOperation ('+' may arrive as ' ' when not URL-encoded)."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    text = "".join(text.replace(" ", "+").split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("message is not base64") from None


class ScepApp:
    """RFC 8894 operations: GetCACaps, GetCACert, GetNextCACert, PKIOperation."""

    def __init__(self, deployment: ServiceKeys) -> None:
        self.deployment = deployment
        self._service: ScepService | None = None
        self._lock = threading.Lock()

    @property
    def service(self) -> ScepService:
        """Built once, off the event loop (it opens HSM keys): see :meth:`ready`."""
        with self._lock:
            if self._service is None:
                service = ScepService(self.deployment)
                service.warm_up()
                self._service = service
            return self._service

    async def ready(self) -> ScepService:
        if self._service is not None:
            return self._service
        return await asyncio.to_thread(lambda: self.service)

    def _profile(self, path: str) -> str | None:
        rest = path[len(PREFIX):].strip("/").split("/") if path.startswith(PREFIX) else []
        parts = [p for p in rest if p and p.lower() != "pkiclient.exe"]
        if len(parts) > 1:
            return None
        name = parts[0] if parts else self.service.settings.default_profile
        return name if self.service.has_profile(name) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        try:
            answer = await self._handle(scope, receive, method)
        except BodyTooLarge:
            answer = _text(413, "request too large")
        except BodyError as exc:  # invalid Content-Length, client gone
            answer = _text(400, str(exc))
        except PKIError as exc:
            answer = _text(503 if exc.kind is ErrorKind.UNAVAILABLE else 400, exc.detail)
        await respond(send, answer, head=method == "HEAD")

    async def _handle(self, scope: Scope, receive: Receive, method: str) -> HttpAnswer:
        await self.ready()
        limit = self.service.settings.max_body_bytes
        query = scope.get("query_string", b"")
        if len(query) > limit * 2:
            return _text(414, "query string too long")
        profile = self._profile(scope["path"])
        if profile is None:
            return _text(404, "unknown SCEP profile")
        try:  # RFC 8894 §4.1: operation and message; more than a few parameters is not SCEP
            params = parse_qs(query.decode("latin-1"), max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            return _text(400, f"at most {MAX_QUERY_FIELDS} query parameters")
        operation = (params.get("operation") or [""])[0]
        if method in ("GET", "HEAD"):
            return await self._get(operation, params, profile, scope)
        if method == "POST":
            body = await read_bounded(receive, limit, header(scope, b"content-length"))
            if operation != "PKIOperation":
                return _text(400, "POST is only for operation=PKIOperation")
            if body[:1] != b"\x30":  # some clients POST base64
                try:
                    body = decode_message(body)
                except ValueError:
                    return _text(400, "body is neither DER nor base64")
            return await asyncio.to_thread(self.service.pki_operation, body, profile, client_ip(scope))
        return _text(405, "method not allowed")

    async def _get(self, operation: str, params: dict[str, list[str]], profile: str, scope: Scope) -> HttpAnswer:
        service = self.service
        if operation == "GetCACaps":
            return await asyncio.to_thread(service.caps)
        if operation == "GetCACert":
            return await asyncio.to_thread(service.ca_certs, (params.get("message") or [""])[0][:64])
        if operation == "GetNextCACert":
            answer = await asyncio.to_thread(service.next_ca_cert)
            return answer or _text(404, "no CA rollover is staged")
        if operation == "PKIOperation":
            try:
                body = decode_message((params.get("message") or [""])[0])
            except ValueError:
                return _text(400, "message is not base64")
            if not body:
                return _text(400, "message is missing")
            return await asyncio.to_thread(service.pki_operation, body, profile, client_ip(scope))
        return _text(400, "unknown operation")


_APPS: dict[int, tuple[ServiceKeys, ScepApp]] = {}


def scep_app(deployment: ServiceKeys) -> ScepApp:
    """The deployment's one ScepApp (shared by the protocol mount and the admin routes)."""
    found = _APPS.get(id(deployment))
    if found is None or found[0] is not deployment:
        found = _APPS[id(deployment)] = (deployment, ScepApp(deployment))
    return found[1]


def http_mounts(deployment: ServiceKeys) -> list[HttpMount]:
    return [HttpMount(PREFIX, scep_app(deployment), frozenset({HTTP, HTTPS}))]


def admin_routes(deployment: ServiceKeys) -> list[AdminRoutes]:
    """Entry point ``ikepki.admin_routes: scep``: ``/admin/v1/scep/…``."""
    from enrollment.scep.admin import MAX_ADMIN_BODY, admin_router

    return [AdminRoutes("/scep", admin_router(scep_app(deployment).ready), MAX_ADMIN_BODY, "scep")]
