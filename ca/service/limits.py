"""Limits every HTTP listener of ``ikepki serve`` and ``ikepki ocsp serve`` enforces against slow,
idle, greedy or hostile clients (section ``listener:`` in ikepki.yaml, environment
``IKEPKI_LISTENER_<KEY>``). Enforced in the HTTP protocol, before any app runs:

- ``max_connections`` open connections per listener (TLS handshakes in progress included); one
  more is answered ``503 Service Unavailable`` with ``Retry-After`` and closed at once.
- ``max_header_bytes`` for the request line plus headers, counted on the raw bytes *before* the
  parser buffers them (httptools would otherwise buffer a 100 MB header), and ``max_headers``
  header fields: ``431 Request Header Fields Too Large`` (RFC 6585 §5), or ``414 URI Too Long``
  (RFC 9110 §15.5.15) when the request line alone is too long; connection closed.
- ``max_body_bytes``: a larger ``Content-Length`` or body gets ``413 Content Too Large``
  (RFC 9110 §15.5.14); apps keep their own, smaller limits.
- ``header_timeout_seconds`` from the first byte of a request (or from connect) to the end of its
  headers, and ``body_timeout_seconds`` from there to the end of its body: ``408 Request Timeout``
  (RFC 9110 §15.5.9) and close; a connection that never sends a byte is closed silently.
- ``handshake_timeout_seconds`` for the TLS handshake; ``keep_alive_seconds`` idle between requests.
- Repeated log lines (e.g. ``accept`` failing with EMFILE) are rate-limited per message.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import uvicorn
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ca.config import IkepkiSettings

log = logging.getLogger("ikepki.service")


class ListenerSettings(IkepkiSettings):
    """``listener:`` in ikepki.yaml; environment ``IKEPKI_LISTENER_<KEY>``."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_LISTENER_")

    max_connections: int = Field(default=1000, ge=1)  # per listener; keep below the process's file limit
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)  # request line + headers
    max_headers: int = Field(default=100, ge=8, le=1000)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    header_timeout_seconds: float = Field(default=10, gt=0)
    body_timeout_seconds: float = Field(default=30, gt=0)
    handshake_timeout_seconds: float = Field(default=10, gt=0)
    keep_alive_seconds: float = Field(default=15, gt=0)


def _status(code: int, reason: str, extra: bytes = b"") -> bytes:
    body = reason.encode() + b"\n"
    return (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n%s\r\n%s" % (code, reason.encode(), len(body), extra, body))


REFUSED = _status(503, "Service Unavailable", b"retry-after: 1\r\n")
HEADERS_TOO_LARGE = _status(431, "Request Header Fields Too Large")
URI_TOO_LONG = _status(414, "URI Too Long")
BODY_TOO_LARGE = _status(413, "Content Too Large")
TIMED_OUT = _status(408, "Request Timeout")

_HEAD, _BODY, _APP = 0, 1, 2  # where the current request is


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. ``listener_limits`` and ``pending`` (the
    protocols accepted but not yet connected, i.e. in their TLS handshake) are set per listener by
    :class:`LimitedServer`."""

    listener_limits: ListenerSettings = ListenerSettings()
    pending: weakref.WeakKeyDictionary[Any, float]  # protocol -> accept time (loop clock)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _HEAD
        self._head_bytes = 0
        self._line_done = False  # the request line of the current request is complete
        self._header_count = 0
        self._body_bytes = 0
        self._rejected: bytes | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.pending.pop(self, None)
        super().connection_made(transport)
        lim = self.listener_limits
        if len(self.connections) + self._handshaking() > lim.max_connections:
            log.warning("connection limit (%d) reached: refusing connections", lim.max_connections)
            self._refuse(REFUSED)
            return
        self._arm(lim.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _handshaking(self) -> int:
        """Connections accepted whose TLS handshake may still be running (not yet timed out: a
        failed handshake never reaches the protocol, so age is the only sign of its end)."""
        if not self.pending:
            return 0
        oldest = self.loop.time() - self.listener_limits.handshake_timeout_seconds - 0.5
        for protocol, accepted in list(self.pending.items()):
            if accepted < oldest:
                self.pending.pop(protocol, None)
        return len(self.pending)

    # -- timers -------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self._phase == _BODY or self._head_bytes > 0
        responding = self.cycle is not None and getattr(self.cycle, "response_started", False)
        if started and not responding:
            self.transport.write(TIMED_OUT)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._rejected = response
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.write(response)
        self.transport.close()

    # -- byte counting before the parser ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        lim = self.listener_limits
        while data and self._rejected is None and not self.transport.is_closing():
            if self._phase == _BODY or self._phase == _APP:
                super().data_received(data)
                return
            if self._head_bytes == 0 and self._deadline is None:
                self._arm(lim.header_timeout_seconds)  # first byte of a request on a kept-alive connection
            room = lim.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(HEADERS_TOO_LARGE if self._line_done else URI_TOO_LONG)
                return
            chunk, data = data[:room], data[room:]
            self._head_bytes += len(chunk)
            if not self._line_done and b"\n" in chunk:
                self._line_done = True
            super().data_received(chunk)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._body_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count <= self.listener_limits.max_headers:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        lim = self.listener_limits
        if self._header_count > lim.max_headers:
            self._refuse(HEADERS_TOO_LARGE)
            return
        declared = next((v for k, v in self.headers if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > lim.max_body_bytes:
            self._refuse(BODY_TOO_LARGE)
            return
        self._phase = _BODY
        self._arm(lim.body_timeout_seconds)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._rejected is not None:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.listener_limits.max_body_bytes:
            self._refuse(BODY_TOO_LARGE)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected is not None:
            return
        self._disarm()
        self._phase = _HEAD
        self._head_bytes = 0
        self._line_done = False
        super().on_message_complete()


class LimitedServer(uvicorn.Server):
    """uvicorn.Server whose listener has a TLS handshake timeout and counts connections still in
    their handshake against ``max_connections`` (its own listener, or a socket the supervisor shares)."""

    def __init__(self, config: uvicorn.Config, limits: ListenerSettings) -> None:
        super().__init__(config)
        self.limits = limits

    async def startup(self, sockets: list[Any] | None = None) -> None:
        config = self.config
        pending: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        base: type[LimitedHttpProtocol] = config.http_protocol_class  # type: ignore[assignment]
        protocol_class = type(base.__name__, (base,), {"listener_limits": self.limits, "pending": pending})

        loop = asyncio.get_running_loop()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol = protocol_class(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                                      app_state=self.lifespan.state, _loop=_loop)
            if config.ssl is not None:
                pending[protocol] = loop.time()
            return protocol

        kwargs: dict[str, Any] = {"sock": sockets[0]} if sockets else \
            {"host": config.host, "port": config.port, "backlog": config.backlog}
        if config.ssl is not None:
            kwargs |= {"ssl": config.ssl, "ssl_handshake_timeout": self.limits.handshake_timeout_seconds}
        server = await loop.create_server(create_protocol, **kwargs)
        self.servers = [server]
        self.started = True
