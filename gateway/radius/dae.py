"""RADIUS Dynamic Authorization Server (RFC 5176): Disconnect-Request deletes the IKE SA.

A request is answered only if it comes from a configured client address and its Request
Authenticator and Message-Authenticator verify with the DAE secret (RFC 5176 §3.5;
Message-Authenticator required, BlastRADIUS); everything else is silently discarded.
Replay protection (RFC 5176 §6.3): a request whose Event-Timestamp is more than 300 s from our
clock is silently discarded (no NAK), and so, with ``require_event_timestamp`` (the default), is
a request without one. CoA-Request gets CoA-NAK Error-Cause 405 (Unsupported Service). Disconnect-Request:
ACK if at least one session matched, else NAK with Error-Cause 503 (Session Context Not Found).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from gateway.clock import Clock, SystemClock
from gateway.radius import packet as rp
from gateway.radius.config import DaeConfig
from gateway.radius.packet import Attr, Code

Disconnect = Callable[[str | None, str | None, str | None], int]
WINDOW = 300
ERR_UNSUPPORTED_SERVICE, ERR_SESSION_NOT_FOUND = 405, 503


class DaeListener(asyncio.DatagramProtocol):
    def __init__(self, cfg: DaeConfig, disconnect: Disconnect, log: Callable[..., None],
                 clock: Clock | None = None) -> None:
        self.cfg, self.disconnect, self.log = cfg, disconnect, log
        self.clock = clock or SystemClock()
        self.transport: asyncio.DatagramTransport | None = None
        self._answers: dict[tuple[str, int, bytes], bytes] = {}  # duplicate detection (RFC 5080 §2.2.2)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        peer = (str(addr[0]), int(addr[1]))
        if peer[0] not in self.cfg.clients:
            return
        try:
            pkt = rp.verify_request(data, self.cfg.secret, require_ma=True)
        except rp.MalformedPacket as exc:
            self.log("radius_dae_discarded", peer=f"{peer[0]}:{peer[1]}", reason=str(exc))
            return
        if pkt.code in (Code.DISCONNECT_REQUEST, Code.COA_REQUEST) and not self._fresh(pkt, peer):
            return
        key = (peer[0], pkt.identifier, pkt.authenticator)
        if key in self._answers:
            self._send(self._answers[key], peer)
            return
        answer = self._handle(pkt, peer)
        self._answers = {**dict(list(self._answers.items())[-255:]), key: answer}
        self._send(answer, peer)

    def _fresh(self, pkt: rp.Packet, peer: tuple[str, int]) -> bool:
        """RFC 5176 §6.3: a request with an Event-Timestamp outside the window is silently
        discarded; so is one without Event-Timestamp when the configuration requires it."""
        ts = pkt.first(Attr.EVENT_TIMESTAMP)
        if ts is None:
            if not self.cfg.require_event_timestamp:
                return True
            reason = "no Event-Timestamp"
        elif len(ts) != 4 or abs(int.from_bytes(ts, "big") - self.clock.now().timestamp()) > WINDOW:
            reason = "Event-Timestamp outside window"
        else:
            return True
        self.log("radius_dae_discarded", peer=f"{peer[0]}:{peer[1]}", reason=reason)
        return False

    def _handle(self, pkt: rp.Packet, peer: tuple[str, int]) -> bytes:
        def reply(code: int, error: int | None = None) -> bytes:
            attrs: list[tuple[int, bytes]] = [(Attr.ERROR_CAUSE, rp.u32(error))] if error else []
            return rp.encode_response(code, pkt.identifier, attrs, self.cfg.secret, pkt.authenticator)

        if pkt.code == Code.COA_REQUEST:
            return reply(Code.COA_NAK, ERR_UNSUPPORTED_SERVICE)
        if pkt.code != Code.DISCONNECT_REQUEST:
            return reply(Code.DISCONNECT_NAK, ERR_UNSUPPORTED_SERVICE)
        name, session, framed = (pkt.first(Attr.USER_NAME), pkt.first(Attr.ACCT_SESSION_ID),
                                 pkt.first(Attr.FRAMED_IP_ADDRESS))
        user = name.decode("utf-8", "replace") if name is not None else None
        sid = session.decode("utf-8", "replace") if session is not None else None
        ip = rp.ipv4(framed) if framed is not None else None
        count = self.disconnect(user, sid, ip)
        self.log("radius_disconnect", peer=f"{peer[0]}:{peer[1]}", user_name=user, session_id=sid,
                 framed_ip=ip, deleted=count)
        return reply(Code.DISCONNECT_ACK) if count else reply(Code.DISCONNECT_NAK, ERR_SESSION_NOT_FOUND)

    def _send(self, data: bytes, peer: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, peer)


async def serve_dae(cfg: DaeConfig, disconnect: Disconnect, log: Callable[..., None],
                    clock: Clock | None = None) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: DaeListener(cfg, disconnect, log, clock),
                                                       local_addr=(cfg.host, cfg.port))
    return cast(asyncio.DatagramTransport, transport)
