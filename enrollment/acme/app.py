"""The ASGI edge of the ACME server: bounded bodies, headers, and the service in a worker thread."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

from ca.service.bodies import BodyError, BodyTooLarge, read_body
from ca.service.mounts import Receive, Scope, Send
from enrollment.acme.service import AcmeService, RequestContext, Response

_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}$")


class AcmeApp:
    """Raw ASGI (no framework on the hot path); mounted with ``strip_prefix`` under /acme."""

    def __init__(self, service: AcmeService, max_threads: int = 32) -> None:
        self.service = service
        self.max_body = service.settings.max_body_bytes
        # our own pool (not anyio's): its idle threads end at once at shutdown
        self.pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="acme-http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        base = self._base(scope, headers)
        if base is None:
            await _send(send, Response(400, b"bad Host header\n", "text/plain"), scope["method"])
            return
        try:
            body = await self._body(receive, headers)
        except BodyError as exc:  # invalid Content-Length, client gone
            await _send(send, Response(400, f"{exc}\n".encode(), "text/plain"), scope["method"])
            return
        client = scope.get("client") or ("", 0)
        ctx = RequestContext(scope["method"], scope["path"], base, str(client[0]),
                             headers.get("content-type", ""), body or b"")
        if body is None:
            ctx = RequestContext("POST", "/__too_large__", base, ctx.source)
            resp = await asyncio.get_running_loop().run_in_executor(self.pool, self.service.too_large, ctx)
        else:
            resp = await asyncio.get_running_loop().run_in_executor(self.pool, self.service.handle, ctx)
        await _send(send, resp, scope["method"])

    def _base(self, scope: Scope, headers: dict[str, str]) -> str | None:
        if self.service.settings.base_url:
            return self.service.settings.base_url.rstrip("/")
        host = headers.get("host", "")
        if not _HOST.match(host):
            return None
        return f"{scope.get('scheme', 'https')}://{host}{scope.get('root_path', '')}"

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        """The request body, or None when it exceeds the bound (RFC 8555 §6.2 payload limit)."""
        try:
            return await read_body(receive, self.max_body, headers.get("content-length"))
        except BodyTooLarge:
            return None


async def _send(send: Send, resp: Response, method: str) -> None:
    body = json.dumps(resp.body, separators=(",", ":")).encode() if isinstance(resp.body, dict) else resp.body or b""
    headers = [(b"content-type", resp.content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    headers += [(k.lower().encode(), v.encode()) for k, v in resp.headers.items() if k.lower() != "cache-control"]
    headers += [(b"link", link.encode()) for link in resp.links]
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
