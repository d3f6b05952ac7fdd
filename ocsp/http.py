"""Raw ASGI apps on the plain HTTP listener (no framework on the OCSP hot path):

- ``/ocsp``: RFC 6960 Appendix A.1 POST (``application/ocsp-request``) and RFC 5019 §5 GET
  ``/ocsp/<url-encoded base64 of the DER request>`` (standard or URL-safe alphabet, padding
  optional); pre-signed answers carry RFC 5019 §6.2 cache headers and honour If-None-Match.
- ``/crl/<issuer>.crl`` (full), ``/crl/<issuer>-delta.crl`` (delta), ``/crl/root.crl`` (root CA),
  DER by default, PEM for ``.pem`` or ``?format=pem``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import Sequence

from ca.ports import ServiceKeys
from ca.service.bodies import BodyError, BodyTooLarge, read_body
from ca.service.mounts import HTTP, HttpMount, Receive, Scope, Send
from ocsp.responder import NO_CACHE, Answer
from ocsp.responder_der import ResponseStatus, error_response
from ocsp.runtime import OcspRuntime, runtime_for

OCSP_REQUEST, OCSP_RESPONSE = b"application/ocsp-request", b"application/ocsp-response"
MAX_GET_PATH = 4096
_B64_TRANSLATE = str.maketrans("-_", "+/")


async def _send(send: Send, status: int, body: bytes, content_type: bytes,
                headers: Sequence[tuple[bytes, bytes]] = (), head: bool = False) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _text(send: Send, status: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await _send(send, status, text.encode() + b"\n", b"text/plain; charset=utf-8", headers)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def decode_get_path(text: str) -> bytes | None:
    """RFC 5019 §5: the base64 of the DER request, already percent-decoded by the server."""
    text = text.strip().translate(_B64_TRANSLATE).replace(" ", "+")
    if not text or len(text) > MAX_GET_PATH:
        return None
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class OcspApp:
    """``/ocsp`` (POST and GET)."""

    def __init__(self, runtime: OcspRuntime) -> None:
        self.runtime = runtime
        self.limit = runtime.ocsp_settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path in ("/ocsp", "/ocsp/"):
            ctype = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
            if ctype != OCSP_REQUEST:
                await _text(send, 415, "content type must be application/ocsp-request")
                return
            try:
                body = await read_body(receive, self.limit, _header(scope, b"content-length"))
            except BodyError as exc:  # RFC 6960 §2.3 malformedRequest; 413 when too large
                status = 413 if isinstance(exc, BodyTooLarge) else 400
                await _send(send, status, error_response(ResponseStatus.malformedRequest), OCSP_RESPONSE, NO_CACHE)
                return
            answer = await self.runtime.responder.respond(body)
            await _send(send, 200, answer.body, OCSP_RESPONSE, answer.headers)
        elif method in ("GET", "HEAD") and path.startswith("/ocsp/"):
            await self._get(scope, send, path[len("/ocsp/"):], method == "HEAD")
        elif path in ("/ocsp", "/ocsp/") or path.startswith("/ocsp/"):
            await _text(send, 405, "use POST or GET /ocsp/<base64>", [(b"allow", b"GET, HEAD, POST")])
        else:
            await _text(send, 404, "not found")

    async def _get(self, scope: Scope, send: Send, encoded: str, head: bool) -> None:
        der = decode_get_path(encoded)
        if der is None:
            await _send(send, 400, error_response(ResponseStatus.malformedRequest), OCSP_RESPONSE, NO_CACHE, head)
            return
        answer: Answer = await self.runtime.responder.respond(der)
        if answer.presigned:
            etag = next((v for k, v in answer.headers if k == b"etag"), None)
            if etag is not None and _header(scope, b"if-none-match") == etag:
                await send({"type": "http.response.start", "status": 304, "headers": answer.headers})
                await send({"type": "http.response.body", "body": b""})
                return
        await _send(send, 200, answer.body, OCSP_RESPONSE, answer.headers, head)


class CrlApp:
    """``/crl/<issuer>[-delta].crl|.pem``."""

    def __init__(self, runtime: OcspRuntime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _text(send, 405, "use GET", [(b"allow", b"GET, HEAD")])
            return
        target = parse_crl_path(scope["path"], scope.get("query_string", b""), self.runtime.crl_issuer_ids)
        if target is None:
            await _text(send, 404, "no such CRL")
            return
        issuer_id, kind, pem = target
        served = await self.runtime.crls.get(issuer_id, kind)
        if served is None:
            await self._publish_now()
            self.runtime.crls.checked.pop((issuer_id, kind), None)
            served = await self.runtime.crls.get(issuer_id, kind)
        if served is None:
            await _text(send, 503, "CRL not published yet", [(b"retry-after", b"2")])
            return
        max_age = max(0, min(60, int(served.next_update - time.time())))
        headers = [(b"cache-control", b"max-age=%d, public, no-transform" % max_age), (b"etag", served.etag),
                   (b"last-modified", served.last_modified), (b"expires", served.expires)]
        if _header(scope, b"if-none-match") == served.etag:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body, ctype = (served.pem, b"application/x-pem-file") if pem else (served.der, b"application/pkix-crl")
        await _send(send, 200, body, ctype, headers, scope["method"] == "HEAD")

    async def _publish_now(self) -> None:
        """Nothing published yet (no worker running): publish if this process can take the lease."""
        with contextlib.suppress(Exception):  # answered with 503 below
            await asyncio.to_thread(self.runtime.publish)


def parse_crl_path(path: str, query: bytes, issuers: frozenset[str]) -> tuple[str, str, bool] | None:
    """``/crl/ec.crl`` -> ("ec", "full", False); ``/crl/ec-delta.pem`` -> ("ec", "delta", True)."""
    name = path[len("/crl/"):] if path.startswith("/crl/") else ""
    if name.endswith(".crl"):
        pem = b"format=pem" in query.split(b"&")
    elif name.endswith(".pem"):
        pem = True
    else:
        return None
    base = name[:-4]
    kind = "full"
    if base.endswith("-delta"):
        base, kind = base[:-len("-delta")], "delta"
    if base not in issuers or (base == "root" and kind == "delta"):
        return None
    return base, kind, pem


def http_mounts(deployment: ServiceKeys) -> list[HttpMount]:
    runtime = runtime_for(deployment)
    return [HttpMount("/ocsp", OcspApp(runtime), frozenset({HTTP})),
            HttpMount("/crl", CrlApp(runtime), frozenset({HTTP}))]
