"""HTTP endpoints of the responder: revocation push receiver and SA listing.

- ``POST /v1/revocations`` body: compact JWS (``application/jose``) verified with
  :func:`ca.revocation_event.verify_event` against the configured roots. A ``revoked``
  event blocks (issuer key id, serial) at once and deletes live IKE SAs of that
  certificate with INFORMATIONAL Delete (RFC 7296 §1.4.1). Answers
  ``200 {"accepted": true, "terminated_sas": N, "duplicate": bool}``; ``400`` for a
  malformed event, ``401`` for an untrusted or badly signed one. A ``test`` event is verified
  the same way and answered ``200 {"accepted": true, "test": true, …}`` with no other effect.
- ``GET /v1/sas``: ``{"sas": [...]}``. ``GET /healthz``: ``{"ok": true}``.

A deliberately small HTTP/1.1 server on asyncio streams (one request per connection),
served on TCP and optionally on a local Unix control socket. Bounded against hostile clients
(:class:`PushLimits`): at most ``max_connections`` open connections (one more gets ``503`` and is
closed), the TLS handshake and the whole request (head and body) each within ``timeout`` seconds
(``408`` once the request started, a silent close for a connection that never sent a byte),
``MAX_HEADER`` bytes / ``MAX_HEADER_FIELDS`` fields of head (``431``) and ``MAX_BODY`` of body
(``413``). ``ikepki responder serve`` rate-limits repeated log lines (gateway/server.py).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

from ca.revocation_event import EVENT_REVOKED, EVENT_TEST, EventVerificationError, verify_event
from gateway import events as ev
from gateway.responder import Responder

MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
MAX_HEADER_FIELDS = 64
_BAD_REQUEST_HINTS = ("malformed", "not a compact", "payload", "bad event field", "unknown event type",
                      "unsupported event version", "too large", "wrong JWS type")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


@dataclass(frozen=True)
class PushLimits:
    """Per listener: open connections, and seconds for the TLS handshake and for a whole request."""

    max_connections: int = 64
    timeout: float = 10.0


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: dict[str, Any]


class ControlApi:
    """Routes of the push listener / control socket."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.applied: set[str] = set()

    def handle(self, method: str, path: str, body: bytes) -> HttpResult:
        if path == "/v1/revocations":
            return self._revocation(body) if method == "POST" else HttpResult(405, {"error": "POST only"})
        if path == "/v1/sas" and method == "GET":
            return HttpResult(200, {"sas": [sa.to_dict() for sa in self.responder.sas.values()]})
        if path == "/healthz" and method == "GET":
            return HttpResult(200, {"ok": True})
        return HttpResult(404, {"error": "not found"})

    def _revocation(self, body: bytes) -> HttpResult:
        r = self.responder
        try:
            event = verify_event(body, r.cfg.roots, r.clock.now())
        except EventVerificationError as exc:
            status = 400 if any(h in str(exc) for h in _BAD_REQUEST_HINTS) else 401
            r.log.emit(ev.REVOCATION, accepted=False, reason=str(exc))
            return HttpResult(status, {"accepted": False, "error": str(exc)})
        issuer = event.issuer_key_id.lower()
        if event.type == EVENT_TEST:  # a signed probe from `ikepki gateways add/test`: acknowledge only
            r.log.emit(ev.REVOCATION, accepted=True, event_id=event.event_id, type=event.type)
            return HttpResult(200, {"accepted": True, "test": True, "terminated_sas": 0, "duplicate": False})
        if event.type == EVENT_REVOKED:
            duplicate = r.blocklist.blocks(issuer, event.serial_int)
            terminated = 0 if duplicate else r.revoke(issuer, event.serial_int)
        else:
            duplicate, terminated = False, 0
            r.blocklist.remove(issuer, event.serial_int)
        r.log.emit(ev.REVOCATION, accepted=True, event_id=event.event_id, type=event.type,
                   serial=event.serial, issuer_key_id=issuer, terminated_sas=terminated, duplicate=duplicate)
        return HttpResult(200, {"accepted": True, "terminated_sas": terminated, "duplicate": duplicate})


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | HttpResult:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return HttpResult(431, {"error": f"request head larger than {MAX_HEADER} bytes"})
    except (asyncio.IncompleteReadError, ValueError):
        return HttpResult(400, {"error": "bad request"})
    lines = head.decode("latin-1").split("\r\n")
    if len(lines) > MAX_HEADER_FIELDS + 3:
        return HttpResult(431, {"error": f"more than {MAX_HEADER_FIELDS} header fields"})
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return HttpResult(400, {"error": "bad request line"})
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return HttpResult(400, {"error": "bad content-length"})
    if length > MAX_BODY or length < 0:
        return HttpResult(413, {"error": "body too large"})
    body = await reader.readexactly(length) if length else b""
    return parts[0], parts[1].split("?")[0], body


def _response(result: HttpResult) -> bytes:
    payload = json.dumps(result.body).encode()
    return (f"HTTP/1.1 {result.status} {_REASONS.get(result.status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode() + payload)


def make_handler(api: ControlApi, limits: PushLimits | None = None) -> Any:
    limits = limits or PushLimits()
    active: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(active) >= limits.max_connections:
            writer.write(_response(HttpResult(503, {"error": "too many connections"})))
            writer.close()
            return
        active.add(writer)
        try:
            try:
                req = await asyncio.wait_for(_read_request(reader), limits.timeout)
            except TimeoutError:
                if reader._buffer:  # type: ignore[attr-defined]  # the request had started: tell it why
                    writer.write(_response(HttpResult(408, {"error": "request not received in time"})))
                return
            result = req if isinstance(req, HttpResult) else api.handle(*req)
            writer.write(_response(result))
            await asyncio.wait_for(writer.drain(), limits.timeout)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            active.discard(writer)
            writer.close()
    handle.active = active  # type: ignore[attr-defined]  # for tests and metrics
    return handle


async def serve_tcp(api: ControlApi, host: str, port: int, tls: ssl.SSLContext | None = None,
                    limits: PushLimits | None = None) -> asyncio.Server:
    """HTTP, or HTTPS when ``tls`` is given (server certificate only; events carry their own proof)."""
    limits = limits or PushLimits()
    return await asyncio.start_server(make_handler(api, limits), host, port, limit=MAX_HEADER, ssl=tls,
                                      ssl_handshake_timeout=limits.timeout if tls is not None else None)


async def serve_unix(api: ControlApi, path: str) -> asyncio.Server:
    return await asyncio.start_unix_server(make_handler(api), path, limit=MAX_HEADER)
