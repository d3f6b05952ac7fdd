"""RADIUS wire format: packets, attributes and their authenticators.

- Packet and attribute format, Request/Response Authenticator: RFC 2865 §3, §5.
- Accounting Request Authenticator: RFC 2866 §3; Disconnect/CoA the same: RFC 5176 §3.5.
- Message-Authenticator (HMAC-MD5): RFC 3579 §3.2; for Accounting, Disconnect and CoA
  requests it is computed with the Request Authenticator field zeroed (RFC 5176 §3.5).
  Sent as the *first* attribute and required in every Access-* answer (BlastRADIUS,
  CVE-2024-3596; draft-ietf-radext-deprecating-radius).
- EAP-Message split at 253 octets: RFC 3579 §3.1.
- MS-MPPE-Send/Recv-Key salt-encryption: RFC 2548 §2.4.2, §2.4.3.

Every parse is bounded (RFC 2865 §3: 20..4096 octets); any violation raises
:class:`MalformedPacket` and the packet is silently discarded by the callers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum

MAX_PACKET = 4096
HEADER = 20
ATTR_MAX = 253  # value octets per attribute


class Code(IntEnum):
    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42
    COA_REQUEST = 43
    COA_ACK = 44
    COA_NAK = 45


class Attr(IntEnum):
    USER_NAME = 1
    NAS_IP_ADDRESS = 4
    NAS_PORT = 5
    SERVICE_TYPE = 6
    FRAMED_IP_ADDRESS = 8
    FILTER_ID = 11
    REPLY_MESSAGE = 18
    STATE = 24
    CLASS = 25
    VENDOR_SPECIFIC = 26
    SESSION_TIMEOUT = 27
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    NAS_IDENTIFIER = 32
    ACCT_STATUS_TYPE = 40
    ACCT_DELAY_TIME = 41
    ACCT_INPUT_OCTETS = 42
    ACCT_OUTPUT_OCTETS = 43
    ACCT_SESSION_ID = 44
    ACCT_AUTHENTIC = 45
    ACCT_SESSION_TIME = 46
    ACCT_TERMINATE_CAUSE = 49
    EVENT_TIMESTAMP = 55
    NAS_PORT_TYPE = 61
    EAP_MESSAGE = 79
    MESSAGE_AUTHENTICATOR = 80
    ACCT_INTERIM_INTERVAL = 85
    ERROR_CAUSE = 101


REQUESTS_WITH_ZERO_AUTH = {Code.ACCOUNTING_REQUEST, Code.DISCONNECT_REQUEST, Code.COA_REQUEST}
MICROSOFT = 311
MS_MPPE_SEND_KEY = 16
MS_MPPE_RECV_KEY = 17


class MalformedPacket(ValueError):
    """Not a RADIUS packet we accept; discard it silently (RFC 2865 §3)."""


@dataclass(frozen=True)
class Packet:
    """One RADIUS packet: attributes in wire order as (type, value)."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[int, bytes], ...] = field(default_factory=tuple)

    def get(self, atype: int) -> list[bytes]:
        return [v for t, v in self.attributes if t == atype]

    def first(self, atype: int) -> bytes | None:
        return next((v for t, v in self.attributes if t == atype), None)

    def eap_message(self) -> bytes:
        """EAP-Message attributes concatenated in order (RFC 3579 §3.1)."""
        return b"".join(self.get(Attr.EAP_MESSAGE))

    def vendor(self, vendor_id: int, vtype: int) -> bytes | None:
        """First vendor sub-attribute ``vtype`` of ``vendor_id`` (RFC 2865 §5.26 layout)."""
        for v in self.get(Attr.VENDOR_SPECIFIC):
            if len(v) < 6 or int.from_bytes(v[:4], "big") != vendor_id:
                continue
            pos = 4
            while pos + 2 <= len(v):
                t, ln = v[pos], v[pos + 1]
                if ln < 2 or pos + ln > len(v):
                    break
                if t == vtype:
                    return v[pos + 2 : pos + ln]
                pos += ln
        return None


def encode_attributes(attrs: tuple[tuple[int, bytes], ...] | list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for t, v in attrs:
        if not 0 < t < 256 or len(v) > ATTR_MAX:
            raise ValueError(f"attribute {t}: bad type or value longer than {ATTR_MAX}")
        out += bytes((t, len(v) + 2)) + v
    return bytes(out)


def decode(data: bytes) -> Packet:
    """Parse a datagram (RFC 2865 §3): length field bounds the packet, octets beyond it are
    padding and ignored; attributes must exactly fill it."""
    if len(data) < HEADER or len(data) > MAX_PACKET:
        raise MalformedPacket("bad datagram size")
    length = int.from_bytes(data[2:4], "big")
    if length < HEADER or length > len(data) or length > MAX_PACKET:
        raise MalformedPacket("bad length field")
    attrs: list[tuple[int, bytes]] = []
    pos = HEADER
    while pos < length:
        if pos + 2 > length:
            raise MalformedPacket("truncated attribute header")
        t, ln = data[pos], data[pos + 1]
        if ln < 2 or pos + ln > length:
            raise MalformedPacket("bad attribute length")
        attrs.append((t, bytes(data[pos + 2 : pos + ln])))
        pos += ln
    return Packet(data[0], data[1], bytes(data[4:20]), tuple(attrs))


def _raw(code: int, ident: int, auth: bytes, body: bytes) -> bytes:
    length = HEADER + len(body)
    if length > MAX_PACKET:
        raise ValueError("RADIUS packet longer than 4096 octets")
    return bytes((code, ident)) + length.to_bytes(2, "big") + auth + body


def _ma_offset(data: bytes) -> int | None:
    pos = HEADER
    while pos + 2 <= len(data):
        if data[pos] == Attr.MESSAGE_AUTHENTICATOR and data[pos + 1] == 18:
            return pos + 2
        pos += max(data[pos + 1], 2)
    return None


def _hmac_md5(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, "md5").digest()


def _md5(*parts: bytes) -> bytes:
    return hashlib.md5(b"".join(parts), usedforsecurity=False).digest()


def encode_request(code: int, ident: int, attrs: list[tuple[int, bytes]], secret: bytes,
                   request_auth: bytes) -> bytes:
    """A request with Message-Authenticator as its first attribute (RFC 3579 §3.2).
    ``request_auth`` is the random Request Authenticator for Access-Request; for Accounting,
    Disconnect and CoA requests it is ignored and computed (RFC 2866 §3, RFC 5176 §3.5)."""
    body = encode_attributes([(Attr.MESSAGE_AUTHENTICATOR, bytes(16)), *attrs])
    zero_auth = code in REQUESTS_WITH_ZERO_AUTH
    auth = bytes(16) if zero_auth else request_auth
    raw = bytearray(_raw(code, ident, auth, body))
    raw[HEADER + 2 : HEADER + 18] = _hmac_md5(secret, bytes(raw))
    if zero_auth:
        raw[4:20] = _md5(bytes(raw), secret)
    return bytes(raw)


def encode_response(code: int, ident: int, attrs: list[tuple[int, bytes]], secret: bytes,
                    request_auth: bytes) -> bytes:
    """A response (RFC 2865 §3 Response Authenticator) with Message-Authenticator first,
    computed over the packet carrying the request's authenticator (RFC 3579 §3.2)."""
    body = encode_attributes([(Attr.MESSAGE_AUTHENTICATOR, bytes(16)), *attrs])
    raw = bytearray(_raw(code, ident, request_auth, body))
    raw[HEADER + 2 : HEADER + 18] = _hmac_md5(secret, bytes(raw))
    raw[4:20] = _md5(bytes(raw), secret)
    return bytes(raw)


def verify_response(data: bytes, secret: bytes, request_auth: bytes, require_ma: bool) -> Packet:
    """Check Response Authenticator and Message-Authenticator of an answer to a request whose
    authenticator was ``request_auth``; raise MalformedPacket if anything does not verify."""
    pkt = decode(data)
    length = int.from_bytes(data[2:4], "big")
    raw = bytearray(data[:length])
    want = _md5(bytes(raw[:4]), request_auth, bytes(raw[20:]), secret)
    if not hmac.compare_digest(want, pkt.authenticator):
        raise MalformedPacket("Response Authenticator does not verify (wrong secret?)")
    _check_ma(raw, secret, request_auth, require_ma, len(pkt.get(Attr.MESSAGE_AUTHENTICATOR)))
    return pkt


def verify_request(data: bytes, secret: bytes, require_ma: bool) -> Packet:
    """Check a Disconnect/CoA/Accounting request received by us (RFC 5176 §3.5, RFC 2866 §3)."""
    pkt = decode(data)
    if pkt.code not in REQUESTS_WITH_ZERO_AUTH:
        raise MalformedPacket("not a request with a computed authenticator")
    length = int.from_bytes(data[2:4], "big")
    raw = bytearray(data[:length])
    want = _md5(bytes(raw[:4]), bytes(16), bytes(raw[20:]), secret)
    if not hmac.compare_digest(want, pkt.authenticator):
        raise MalformedPacket("Request Authenticator does not verify (wrong secret?)")
    _check_ma(raw, secret, bytes(16), require_ma, len(pkt.get(Attr.MESSAGE_AUTHENTICATOR)))
    return pkt


def _check_ma(raw: bytearray, secret: bytes, auth_for_hmac: bytes, require: bool, count: int) -> None:
    if count > 1:
        raise MalformedPacket("more than one Message-Authenticator")
    off = _ma_offset(bytes(raw))
    if off is None:
        if require or count:
            raise MalformedPacket("Message-Authenticator missing (required, RFC 3579 §3.2 / BlastRADIUS)")
        return
    got = bytes(raw[off : off + 16])
    raw[4:20] = auth_for_hmac
    raw[off : off + 16] = bytes(16)
    if not hmac.compare_digest(_hmac_md5(secret, bytes(raw)), got):
        raise MalformedPacket("Message-Authenticator does not verify")


def split_eap(eap: bytes) -> list[tuple[int, bytes]]:
    """EAP packet into EAP-Message attributes of at most 253 octets (RFC 3579 §3.1)."""
    return [(Attr.EAP_MESSAGE, eap[i : i + ATTR_MAX]) for i in range(0, len(eap), ATTR_MAX)] or [
        (Attr.EAP_MESSAGE, b"")]


def decrypt_mppe(value: bytes, secret: bytes, request_auth: bytes) -> bytes:
    """MS-MPPE-Send/Recv-Key String (RFC 2548 §2.4.2/2.4.3): Salt(2, high bit set) ‖ C;
    P = c(i) xor MD5(S ‖ c(i-1)) with c(0) = R ‖ Salt; P = Key-Length ‖ Key ‖ padding."""
    if len(value) < 18 or (len(value) - 2) % 16 or not value[0] & 0x80:
        raise MalformedPacket("bad MPPE key attribute")
    salt, cipher = value[:2], value[2:]
    plain = bytearray()
    prev = request_auth + salt
    for i in range(0, len(cipher), 16):
        block = cipher[i : i + 16]
        b = _md5(secret, prev)
        plain += bytes(x ^ y for x, y in zip(block, b, strict=True))
        prev = block
    klen = plain[0]
    if klen == 0 or klen > len(plain) - 1:
        raise MalformedPacket("bad MPPE key length")
    return bytes(plain[1 : 1 + klen])


def encrypt_mppe(key: bytes, secret: bytes, request_auth: bytes, salt: bytes) -> bytes:
    """Inverse of :func:`decrypt_mppe` (RFC 2548 §2.4.2); used by tests and the round-trip fuzz."""
    if len(salt) != 2 or not salt[0] & 0x80 or not 0 < len(key) < 240:
        raise ValueError("bad salt or key")
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % 16)
    out = bytearray()
    prev = request_auth + salt
    for i in range(0, len(plain), 16):
        c = bytes(x ^ y for x, y in zip(plain[i : i + 16], _md5(secret, prev), strict=True))
        out += c
        prev = c
    return salt + bytes(out)


def msk_of(pkt: Packet, secret: bytes, request_auth: bytes) -> bytes | None:
    """MSK = MS-MPPE-Recv-Key ‖ MS-MPPE-Send-Key (RFC 3748 §7.10 via RFC 2548), or None."""
    recv, send = pkt.vendor(MICROSOFT, MS_MPPE_RECV_KEY), pkt.vendor(MICROSOFT, MS_MPPE_SEND_KEY)
    if recv is None or send is None:
        return None
    return decrypt_mppe(recv, secret, request_auth) + decrypt_mppe(send, secret, request_auth)


def vsa(vendor_id: int, vtype: int, value: bytes) -> tuple[int, bytes]:
    return Attr.VENDOR_SPECIFIC, vendor_id.to_bytes(4, "big") + bytes((vtype, len(value) + 2)) + value


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def ipv4(value: bytes) -> str | None:
    return str(ipaddress.IPv4Address(value)) if len(value) == 4 else None
