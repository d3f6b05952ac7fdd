"""IKEv2 message codec: header and payload chain (RFC 7296 §3).

Parsing is strict: every length is bounds-checked, messages above 64 KiB are refused
and an unknown payload with the critical bit set raises :class:`UnsupportedCritical`
(RFC 7296 §2.5). The SK payload (§3.14) is returned opaque; :mod:`gateway.ikev2.crypto`
opens it and :func:`parse_chain` decodes the inner payloads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from gateway.ikev2.constants import (
    ATTR_KEY_LENGTH,
    HEADER_LEN,
    IKE_VERSION,
    KNOWN_PAYLOADS,
    MAX_MESSAGE,
    PayloadType,
)


class MalformedMessage(ValueError):
    """The octets are not a well-formed IKEv2 message (RFC 7296 §2.21: INVALID_SYNTAX)."""


class UnsupportedCritical(MalformedMessage):
    """An unknown payload had the critical bit set (RFC 7296 §2.5)."""

    def __init__(self, payload_type: int) -> None:
        super().__init__(f"unsupported critical payload {payload_type}")
        self.payload_type = payload_type


@dataclass(frozen=True)
class Header:
    """RFC 7296 §3.1 IKE header."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    version: int = IKE_VERSION

    def encode(self) -> bytes:
        return struct.pack("!8s8sBBBBII", self.spi_i, self.spi_r, self.next_payload, self.version,
                           self.exchange, self.flags, self.message_id, self.length)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) < HEADER_LEN:
            raise MalformedMessage("short header")
        spi_i, spi_r, nxt, ver, exch, flags, mid, length = struct.unpack_from("!8s8sBBBBII", data)
        return cls(spi_i, spi_r, nxt, exch, flags, mid, length, ver)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x20)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & 0x08)


@dataclass(frozen=True)
class Transform:
    """RFC 7296 §3.3.2 Transform substructure (only the Key Length attribute, §3.3.5)."""

    type: int
    id: int
    key_length: int | None = None

    def encode(self, last: bool) -> bytes:
        attrs = b""
        if self.key_length is not None:
            attrs = struct.pack("!HH", 0x8000 | ATTR_KEY_LENGTH, self.key_length)
        return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0, self.id) + attrs


@dataclass(frozen=True)
class Proposal:
    """RFC 7296 §3.3.1 Proposal substructure."""

    num: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self, last: bool) -> bytes:
        body = b"".join(t.encode(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms))
        head = struct.pack("!BBHBBBB", 0 if last else 2, 0, 8 + len(self.spi) + len(body), self.num,
                           self.protocol, len(self.spi), len(self.transforms))
        return head + self.spi + body

    def of_type(self, ttype: int) -> list[Transform]:
        return [t for t in self.transforms if t.type == ttype]


@dataclass(frozen=True)
class Payload:
    """Base of all payloads; ``critical`` is the C bit of the generic header (§3.2)."""

    ptype: ClassVar[int] = 0

    def body(self) -> bytes:
        raise NotImplementedError

    @property
    def payload_type(self) -> int:
        return self.ptype


@dataclass(frozen=True)
class SA(Payload):
    """RFC 7296 §3.3 Security Association payload."""

    ptype: ClassVar[int] = PayloadType.SA
    proposals: tuple[Proposal, ...] = ()

    def body(self) -> bytes:
        return b"".join(p.encode(i == len(self.proposals) - 1) for i, p in enumerate(self.proposals))


@dataclass(frozen=True)
class KE(Payload):
    """RFC 7296 §3.4 Key Exchange payload."""

    ptype: ClassVar[int] = PayloadType.KE
    group: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data


@dataclass(frozen=True)
class ID(Payload):
    """RFC 7296 §3.5 Identification payload (IDi when ``initiator`` else IDr)."""

    id_type: int = 0
    data: bytes = b""
    initiator: bool = True

    def body(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data

    @property
    def payload_type(self) -> int:
        return PayloadType.IDI if self.initiator else PayloadType.IDR


@dataclass(frozen=True)
class Cert(Payload):
    """RFC 7296 §3.6 Certificate payload."""

    ptype: ClassVar[int] = PayloadType.CERT
    encoding: int = 4
    data: bytes = b""

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass(frozen=True)
class CertReq(Payload):
    """RFC 7296 §3.7 Certificate Request payload."""

    ptype: ClassVar[int] = PayloadType.CERTREQ
    encoding: int = 4
    data: bytes = b""

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass(frozen=True)
class Auth(Payload):
    """RFC 7296 §3.8 Authentication payload."""

    ptype: ClassVar[int] = PayloadType.AUTH
    method: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!B3x", self.method) + self.data


@dataclass(frozen=True)
class Nonce(Payload):
    """RFC 7296 §3.9 Nonce payload."""

    ptype: ClassVar[int] = PayloadType.NONCE
    data: bytes = b""

    def body(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class Notify(Payload):
    """RFC 7296 §3.10 Notify payload."""

    ptype: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int = 0
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.notify_type) + self.spi + self.data


@dataclass(frozen=True)
class Delete(Payload):
    """RFC 7296 §3.11 Delete payload."""

    ptype: ClassVar[int] = PayloadType.DELETE
    protocol: int = 1
    spi_size: int = 0
    spis: tuple[bytes, ...] = ()

    def body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, self.spi_size, len(self.spis)) + b"".join(self.spis)


@dataclass(frozen=True)
class Vendor(Payload):
    """RFC 7296 §3.12 Vendor ID payload."""

    ptype: ClassVar[int] = PayloadType.VENDOR
    data: bytes = b""

    def body(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class TrafficSelector:
    """RFC 7296 §3.13.1 Traffic Selector (addresses as packed bytes)."""

    ts_type: int
    ip_proto: int
    start_port: int
    end_port: int
    start_addr: bytes
    end_addr: bytes

    def encode(self) -> bytes:
        return (struct.pack("!BBHHH", self.ts_type, self.ip_proto, 8 + 2 * len(self.start_addr),
                            self.start_port, self.end_port) + self.start_addr + self.end_addr)


@dataclass(frozen=True)
class TS(Payload):
    """RFC 7296 §3.13 Traffic Selector payload (TSi when ``initiator`` else TSr)."""

    selectors: tuple[TrafficSelector, ...] = ()
    initiator: bool = True

    def body(self) -> bytes:
        return struct.pack("!B3x", len(self.selectors)) + b"".join(s.encode() for s in self.selectors)

    @property
    def payload_type(self) -> int:
        return PayloadType.TSI if self.initiator else PayloadType.TSR


@dataclass(frozen=True)
class Encrypted(Payload):
    """RFC 7296 §3.14 Encrypted payload, still sealed: ``first_inner`` is its Next Payload."""

    ptype: ClassVar[int] = PayloadType.SK
    first_inner: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class EncryptedFragment(Payload):
    """RFC 7383 §2.5 Encrypted Fragment payload, still sealed (``first_inner`` only in #1)."""

    ptype: ClassVar[int] = PayloadType.SKF
    first_inner: int = 0
    number: int = 1
    total: int = 1
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!HH", self.number, self.total) + self.data


MAX_FRAGMENTS = 64


@dataclass(frozen=True)
class Unknown(Payload):
    """A payload this codec does not interpret (non-critical, or CP/EAP/SKF kept raw)."""

    raw_type: int = 0
    data: bytes = b""
    critical: bool = False

    def body(self) -> bytes:
        return self.data

    @property
    def payload_type(self) -> int:
        return self.raw_type


@dataclass(frozen=True)
class Message:
    """A decoded IKE message. ``raw`` keeps the exact octets (needed for AUTH, §2.15)."""

    header: Header
    payloads: tuple[Payload, ...]
    raw: bytes = field(default=b"", repr=False)

    def find(self, cls: type[Payload]) -> list[Payload]:
        return [p for p in self.payloads if isinstance(p, cls)]

    def notify(self, ntype: int) -> Notify | None:
        return next((p for p in self.payloads if isinstance(p, Notify) and p.notify_type == ntype), None)


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


def _decode_transforms(data: bytes, count: int) -> tuple[Transform, ...]:
    out: list[Transform] = []
    off = 0
    for i in range(count):
        _need(len(data) - off >= 8, "short transform")
        last, _, tlen, ttype, _, tid = struct.unpack_from("!BBHBBH", data, off)
        _need(8 <= tlen <= len(data) - off, "bad transform length")
        _need(last == (0 if i == count - 1 else 3), "bad transform last flag")
        key_length = None
        aoff = off + 8
        while aoff < off + tlen:
            _need(off + tlen - aoff >= 4, "short attribute")
            atype, aval = struct.unpack_from("!HH", data, aoff)
            if atype & 0x8000:
                if atype & 0x7FFF == ATTR_KEY_LENGTH:
                    key_length = aval
                aoff += 4
            else:
                _need(aoff + 4 + aval <= off + tlen, "bad attribute length")
                aoff += 4 + aval
        out.append(Transform(ttype, tid, key_length))
        off += tlen
    _need(off == len(data), "trailing bytes after transforms")
    return tuple(out)


def _decode_sa(body: bytes) -> SA:
    props: list[Proposal] = []
    off = 0
    while off < len(body):
        _need(len(body) - off >= 8, "short proposal")
        last, _, plen, num, proto, spi_size, ntrans = struct.unpack_from("!BBHBBBB", body, off)
        _need(last in (0, 2), "bad proposal last flag")
        _need(8 + spi_size <= plen <= len(body) - off, "bad proposal length")
        spi = body[off + 8 : off + 8 + spi_size]
        transforms = _decode_transforms(body[off + 8 + spi_size : off + plen], ntrans)
        props.append(Proposal(num, proto, spi, transforms))
        off += plen
        _need((last == 0) == (off == len(body)), "proposal 'last' flag does not match the payload")
    _need(bool(props), "empty SA payload")
    return SA(proposals=tuple(props))


def _decode_ts(body: bytes, initiator: bool) -> TS:
    _need(len(body) >= 4, "short TS payload")
    count = body[0]
    off = 4
    sels: list[TrafficSelector] = []
    for _ in range(count):
        _need(len(body) - off >= 8, "short selector")
        ttype, proto, slen, sp, ep = struct.unpack_from("!BBHHH", body, off)
        alen = {7: 4, 8: 16}.get(ttype)
        _need(alen is not None and slen == 8 + 2 * alen and off + slen <= len(body), "bad selector")
        assert alen is not None
        sels.append(TrafficSelector(ttype, proto, sp, ep, body[off + 8 : off + 8 + alen],
                                    body[off + 8 + alen : off + slen]))
        off += slen
    _need(off == len(body), "trailing bytes in TS payload")
    return TS(selectors=tuple(sels), initiator=initiator)


def _decode_delete(body: bytes) -> Delete:
    _need(len(body) >= 4, "short delete")
    proto, spi_size, count = struct.unpack_from("!BBH", body)
    _need(len(body) == 4 + spi_size * count, "bad delete length")
    spis = tuple(body[4 + i * spi_size : 4 + (i + 1) * spi_size] for i in range(count))
    return Delete(protocol=proto, spi_size=spi_size, spis=spis)


def _decode_notify(body: bytes) -> Notify:
    _need(len(body) >= 4, "short notify")
    proto, spi_size, ntype = struct.unpack_from("!BBH", body)
    _need(len(body) >= 4 + spi_size, "bad notify SPI size")
    return Notify(notify_type=ntype, data=body[4 + spi_size :], protocol=proto, spi=body[4 : 4 + spi_size])


def _with_head(body: bytes, what: str) -> bytes:
    _need(len(body) >= 4, f"short {what}")
    return body[4:]


def decode_payload(ptype: int, body: bytes, critical: bool, next_payload: int) -> Payload:
    """Decode one payload body of type ``ptype`` (RFC 7296 §3.3-§3.14)."""
    if ptype == PayloadType.SA:
        return _decode_sa(body)
    if ptype == PayloadType.KE:
        _need(len(body) >= 4, "short KE")
        return KE(group=struct.unpack_from("!H", body)[0], data=body[4:])
    if ptype in (PayloadType.IDI, PayloadType.IDR):
        return ID(id_type=body[0] if body else 0, data=_with_head(body, "ID"),
                  initiator=ptype == PayloadType.IDI)
    if ptype in (PayloadType.CERT, PayloadType.CERTREQ):
        _need(len(body) >= 1, "short CERT")
        cls = Cert if ptype == PayloadType.CERT else CertReq
        return cls(encoding=body[0], data=body[1:])
    if ptype == PayloadType.AUTH:
        return Auth(method=body[0] if body else 0, data=_with_head(body, "AUTH"))
    if ptype == PayloadType.NONCE:
        _need(16 <= len(body) <= 256, "bad nonce length")  # §3.9
        return Nonce(data=body)
    if ptype == PayloadType.NOTIFY:
        return _decode_notify(body)
    if ptype == PayloadType.DELETE:
        return _decode_delete(body)
    if ptype == PayloadType.VENDOR:
        return Vendor(data=body)
    if ptype in (PayloadType.TSI, PayloadType.TSR):
        return _decode_ts(body, ptype == PayloadType.TSI)
    if ptype == PayloadType.SK:
        return Encrypted(first_inner=next_payload, data=body)
    if ptype == PayloadType.SKF:
        _need(len(body) >= 4, "short SKF")
        number, total = struct.unpack_from("!HH", body)
        _need(1 <= number <= total <= MAX_FRAGMENTS, "bad fragment numbering")  # RFC 7383 §2.5
        return EncryptedFragment(first_inner=next_payload, number=number, total=total, data=body[4:])
    if ptype not in KNOWN_PAYLOADS and critical:
        raise UnsupportedCritical(ptype)
    return Unknown(raw_type=ptype, data=body, critical=critical)


def parse_chain(first: int, data: bytes) -> tuple[Payload, ...]:
    """Walk a generic-payload-header chain (§3.2). SK must be the last payload (§3.14)."""
    out: list[Payload] = []
    nxt, off = first, 0
    while nxt != PayloadType.NONE:
        _need(len(data) - off >= 4, "truncated payload header")
        following, flags, plen = struct.unpack_from("!BBH", data, off)
        _need(4 <= plen <= len(data) - off, "bad payload length")
        payload = decode_payload(nxt, data[off + 4 : off + plen], bool(flags & 0x80), following)
        out.append(payload)
        off += plen
        if isinstance(payload, Encrypted | EncryptedFragment):
            _need(off == len(data), "SK payload is not last")
            return tuple(out)
        nxt = following
    _need(off == len(data), "trailing bytes after payload chain")
    return tuple(out)


def parse_message(data: bytes) -> Message:
    """Decode a whole message (no non-ESP marker) with strict bounds (RFC 7296 §3.1)."""
    _need(len(data) <= MAX_MESSAGE, "message too large")
    header = Header.decode(data)
    _need(header.length == len(data), "length field does not match datagram")
    _need(header.version >> 4 == 2, "unsupported major version")
    return Message(header, parse_chain(header.next_payload, data[HEADER_LEN:]), data)


def encode_chain(payloads: tuple[Payload, ...] | list[Payload], trailing_type: int = 0) -> bytes:
    """Serialize payloads with generic headers; the last one's Next Payload is ``trailing_type``."""
    out = bytearray()
    for i, p in enumerate(payloads):
        body = p.body()
        nxt = payloads[i + 1].payload_type if i + 1 < len(payloads) else trailing_type
        if isinstance(p, Encrypted | EncryptedFragment):
            nxt = p.first_inner
        crit = 0x80 if isinstance(p, Unknown) and p.critical else 0
        out += struct.pack("!BBH", nxt, crit, 4 + len(body)) + body
    return bytes(out)


def encode_message(header: Header, payloads: tuple[Payload, ...] | list[Payload]) -> bytes:
    """Serialize a plaintext message, fixing Next Payload and Length in the header."""
    chain = encode_chain(payloads)
    first = payloads[0].payload_type if payloads else 0
    fixed = Header(header.spi_i, header.spi_r, first, header.exchange, header.flags, header.message_id,
                   HEADER_LEN + len(chain), header.version)
    return fixed.encode() + chain
