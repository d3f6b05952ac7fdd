"""A minimal IKEv2 initiator built from the gateway codec, for in-process responder tests.

It exercises paths charon will not take on demand (retransmits, out-of-window IDs,
critical unknown payloads, MOBIKE updates, child rekeys). Interop with a real peer is
proven separately against strongSwan.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.serialization import Encoding
from gw_pki import Issued

from gateway.ikev2 import codec as c
from gateway.ikev2.auth import sign_auth, signed_octets
from gateway.ikev2.constants import HEADER_LEN, Encr, Exchange, Notify, Prf, Protocol
from gateway.ikev2.crypto import (
    DhPrivate,
    Keys,
    Suite,
    derive_keys,
    open_sk,
    seal,
    seal_fragments,
    skeyseed_initial,
)
from gateway.responder import Responder

PEER = ("192.0.2.10", 40500)
PORT = 4500
SUITE = Suite(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256, 19)


def ike_proposal(group: int = 19, spi: bytes = b"") -> c.Proposal:
    return c.Proposal(1, Protocol.IKE, spi, (c.Transform(1, Encr.AES_GCM_16, 256), c.Transform(2, Prf.HMAC_SHA2_256),
                                             c.Transform(4, group)))


def esp_proposal(spi: bytes) -> c.Proposal:
    return c.Proposal(1, Protocol.ESP, spi, (c.Transform(1, Encr.AES_GCM_16, 256), c.Transform(5, 0)))


@dataclass
class Wire:
    """Collects what the responder sends."""

    sent: list[tuple[bytes, tuple[str, int], int]] = field(default_factory=list)

    def __call__(self, data: bytes, peer: tuple[str, int], port: int) -> None:
        self.sent.append((data, peer, port))

    def take(self) -> list[bytes]:
        out = [d for d, _, _ in self.sent]
        self.sent.clear()
        return out


@dataclass
class PyInitiator:
    responder: Responder
    wire: Wire
    client: Issued
    identity: bytes
    spi_i: bytes = field(default_factory=lambda: os.urandom(8))
    spi_r: bytes = bytes(8)
    ni: bytes = field(default_factory=lambda: os.urandom(32))
    keys: Keys | None = None
    init_request: bytes = b""
    init_response: bytes = b""
    msg_id: int = 1

    def init_message(self, group: int = 19, extra: tuple[c.Payload, ...] = ()) -> bytes:
        self.dh = DhPrivate.generate(group)
        hdr = c.Header(self.spi_i, bytes(8), 0, Exchange.IKE_SA_INIT, 0x08, 0)
        payloads = [*extra, c.SA(proposals=(ike_proposal(group),)), c.KE(group=group, data=self.dh.public()),
                    c.Nonce(data=self.ni), c.Notify(Notify.SIGNATURE_HASH_ALGORITHMS, b"\x00\x02"),
                    c.Notify(Notify.IKEV2_FRAGMENTATION_SUPPORTED)]
        return c.encode_message(hdr, payloads)

    async def send(self, raw: bytes, peer: tuple[str, int] = PEER) -> list[bytes]:
        await self.responder.receive(raw, peer, PORT)
        return self.wire.take()

    async def ike_sa_init(self) -> None:
        self.init_request = self.init_message()
        (resp,) = await self.send(self.init_request)
        msg = c.parse_message(resp)
        self.init_response, self.spi_r = resp, msg.header.spi_r
        nr = next(p.data for p in msg.payloads if isinstance(p, c.Nonce))
        ke = next(p for p in msg.payloads if isinstance(p, c.KE))
        seed = skeyseed_initial(SUITE, self.ni, nr, self.dh.shared(ke.data))
        self.keys = derive_keys(SUITE, seed, self.ni, nr, self.spi_i, self.spi_r)
        self.nr = nr

    def sk_message(self, exchange: int, payloads: list[c.Payload], msg_id: int | None = None,
                   response: bool = False) -> bytes:
        assert self.keys is not None
        flags = 0x08 | (0x20 if response else 0)
        hdr = c.Header(self.spi_i, self.spi_r, 0, exchange, flags, self.msg_id if msg_id is None else msg_id)
        return seal(SUITE, self.keys.sk_ei, hdr, payloads)

    def open(self, raw: bytes) -> tuple[c.Payload, ...]:
        assert self.keys is not None
        sk = c.parse_message(raw).payloads[0]
        assert isinstance(sk, c.Encrypted)
        return c.parse_chain(sk.first_inner, open_sk(SUITE, self.keys.sk_er, raw, HEADER_LEN))

    def open_fragments(self, datagrams: list[bytes]) -> tuple[c.Payload, ...]:
        """Reassemble an RFC 7383 fragmented response."""
        assert self.keys is not None
        frags = [(c.parse_message(d).payloads[0], d) for d in datagrams]
        frags.sort(key=lambda f: f[0].number)  # type: ignore[attr-defined]
        first = frags[0][0]
        assert isinstance(first, c.EncryptedFragment) and first.total == len(frags)
        plain = b"".join(open_sk(SUITE, self.keys.sk_er, d, HEADER_LEN, fragment=True) for _, d in frags)
        return c.parse_chain(first.first_inner, plain)

    def sk_fragments(self, exchange: int, payloads: list[c.Payload], size: int) -> list[bytes]:
        assert self.keys is not None
        hdr = c.Header(self.spi_i, self.spi_r, 0, exchange, 0x08, self.msg_id)
        return seal_fragments(SUITE, self.keys.sk_ei, hdr, payloads, size)

    def auth_payloads(self, child: bool = False) -> list[c.Payload]:
        assert self.keys is not None
        idi = c.ID(id_type=3, data=self.identity)
        octets = signed_octets(self.init_request, self.nr, SUITE.prf, self.keys.sk_pi, idi.body())
        sig = sign_auth(self.client.key, octets, frozenset({2}))
        out: list[c.Payload] = [idi, c.Cert(encoding=4, data=self.client.cert.public_bytes(Encoding.DER)),
                                c.Auth(method=sig.method, data=sig.data), c.Notify(Notify.MOBIKE_SUPPORTED)]
        if child:
            out += child_payloads(os.urandom(4))
        return out

    async def request(self, exchange: int, payloads: list[c.Payload]) -> tuple[c.Payload, ...]:
        out = await self.send(self.sk_message(exchange, payloads))
        assert len(out) == 1, out
        self.msg_id += 1
        return self.open(out[0])

    async def establish(self, child: bool = False) -> tuple[c.Payload, ...]:
        await self.ike_sa_init()
        return await self.request(Exchange.IKE_AUTH, self.auth_payloads(child))


def child_payloads(spi: bytes) -> list[c.Payload]:
    any4 = c.TrafficSelector(7, 0, 0, 65535, bytes(4), b"\xff" * 4)
    return [c.SA(proposals=(esp_proposal(spi),)), c.TS(selectors=(any4,), initiator=True),
            c.TS(selectors=(any4,), initiator=False)]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]
