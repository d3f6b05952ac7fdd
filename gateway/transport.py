"""UDP sockets for IKE with the non-ESP marker (RFC 3948 §2.2, RFC 7296 §2.23).

Rule (measured against charon, see the strongSwan note §4): when neither the local nor
the remote port is 500, every IKE message carries the 4-byte zero marker; unmarked
datagrams there are ESP and are dropped, as are NAT-keepalives (one 0xFF octet).
Replies leave from the socket the request arrived on, to the request's source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

from gateway.ikev2.constants import IKE_PORT, MAX_MESSAGE, NON_ESP_MARKER

Handler = Callable[[bytes, tuple[str, int], int], Coroutine[Any, Any, None]]


def uses_marker(local_port: int, remote_port: int) -> bool:
    return local_port != IKE_PORT and remote_port != IKE_PORT


class IkeEndpoint(asyncio.DatagramProtocol):
    """One bound UDP port feeding a handler."""

    def __init__(self, port: int, handler: Handler) -> None:
        self.port = port
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        peer = (str(addr[0]), int(addr[1]))
        if uses_marker(self.port, peer[1]):
            if len(data) < 4 or data[:4] != NON_ESP_MARKER:
                return
            data = data[4:]
        if len(data) > MAX_MESSAGE:
            return
        task = asyncio.ensure_future(self.handler(data, peer, self.port))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            import logging

            logging.getLogger(__name__).error("handler failed", exc_info=task.exception())

    def send(self, data: bytes, peer: tuple[str, int]) -> None:
        if self.transport is None:
            return
        self.transport.sendto((NON_ESP_MARKER + data) if uses_marker(self.port, peer[1]) else data, peer)


async def open_endpoint(host: str, port: int, handler: Handler) -> IkeEndpoint:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(lambda: IkeEndpoint(port, handler),
                                                   local_addr=(host, port))
    return proto
