"""Asynchronous RADIUS client: transactions with retransmission and failover.

- Retransmission: the same packet (same Identifier and authenticator) is re-sent after
  ``timeout`` seconds, ``retries`` times (RFC 5080 §2.2.1); then the next server is tried.
  A server that never answers costs at most ``timeout * (retries+1)`` per server; the
  caller's event loop is never blocked (one UDP socket per transaction, ``asyncio``).
- Answers are accepted only from the server's address, with the request's Identifier, and
  after the Response Authenticator and Message-Authenticator verify (RFC 2865 §3,
  RFC 3579 §3.2); Access-* answers without Message-Authenticator are discarded
  (BlastRADIUS). Anything else is silently discarded and waiting continues.
- Shared secrets come by reference (``file:PATH`` or ``env:NAME``) and are never logged or
  shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import os
import secrets as pyrandom
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from gateway.radius import packet as rp
from gateway.radius.packet import Code

ACCESS_ANSWERS = {Code.ACCESS_ACCEPT, Code.ACCESS_REJECT, Code.ACCESS_CHALLENGE}


class SecretError(ValueError):
    """A secret reference cannot be resolved."""


def resolve_secret(ref: str) -> bytes:
    """``file:PATH`` (first line, trailing newline stripped) or ``env:NAME``."""
    kind, _, where = ref.partition(":")
    if kind == "file":
        try:
            value = Path(where).read_text().splitlines()[0] if Path(where).stat().st_size else ""
        except (OSError, IndexError) as exc:
            raise SecretError(f"cannot read secret file {where}") from exc
    elif kind == "env":
        value = os.environ.get(where, "")
    else:
        raise SecretError("secret must be given as file:PATH or env:NAME")
    if not value:
        raise SecretError(f"secret {kind}:{where} is empty")
    return value.encode()


@dataclass(frozen=True)
class Server:
    """One RADIUS server; ``secret`` holds the resolved bytes and never appears in repr."""

    host: str
    port: int
    secret: bytes = field(repr=False)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Answer:
    """A verified answer and the server and request authenticator it belongs to."""

    packet: rp.Packet
    server: Server
    request_auth: bytes


class NoAnswer(Exception):
    """No server gave a valid answer within its timeouts."""


class _Proto(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: keep waiting
        pass


@dataclass
class RadiusClient:
    """Servers in failover order; the last server that answered is tried first."""

    servers: Sequence[Server]
    timeout: float = 2.0
    retries: int = 2
    _preferred: int = 0

    def order(self, pinned: Server | None = None) -> list[Server]:
        if pinned is not None:  # RFC 5080 §2.1.1: a State belongs to the server that sent it
            return [pinned]
        n = len(self.servers)
        return [self.servers[(self._preferred + i) % n] for i in range(n)]

    async def transact(self, code: int, attrs: list[tuple[int, bytes]], pinned: Server | None = None,
                       require_ma: bool = True) -> Answer:
        """Send one request, return the first verified answer; raise :class:`NoAnswer`."""
        errors: list[str] = []
        for server in self.order(pinned):
            try:
                answer = await self._one(server, code, attrs, require_ma)
            except NoAnswer as exc:
                errors.append(f"{server.label}: {exc}")
                continue
            if server in self.servers:
                self._preferred = list(self.servers).index(server)
            return answer
        raise NoAnswer("; ".join(errors) or "no RADIUS server configured")

    async def _one(self, server: Server, code: int, attrs: list[tuple[int, bytes]], require_ma: bool) -> Answer:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Proto, remote_addr=(server.host, server.port))
        try:
            ident = pyrandom.randbelow(256)
            raw = rp.encode_request(code, ident, attrs, server.secret, os.urandom(16))
            req_auth = raw[4:20]
            rejected = ""
            for _ in range(self.retries + 1):
                transport.sendto(raw)
                deadline = loop.time() + self.timeout
                while (left := deadline - loop.time()) > 0:
                    try:
                        data = await asyncio.wait_for(proto.queue.get(), left)
                    except TimeoutError:
                        break
                    try:
                        pkt = rp.verify_response(data, server.secret, req_auth,
                                                 require_ma and _access(data))
                    except rp.MalformedPacket as exc:
                        rejected = str(exc)
                        continue
                    if pkt.identifier == ident:
                        return Answer(pkt, server, req_auth)
            raise NoAnswer(f"no valid answer{f' (discarded: {rejected})' if rejected else ''}")
        finally:
            transport.close()


def _access(data: bytes) -> bool:
    return bool(data) and data[0] in ACCESS_ANSWERS
