"""OCSP request parsing (RFC 6960 §4.1), strict and bounded, without allocating per element.

    OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }
    TBSRequest  ::= SEQUENCE { version [0] EXPLICIT Version DEFAULT v1, requestorName [1] EXPLICIT GeneralName
                               OPTIONAL, requestList SEQUENCE OF Request, requestExtensions [2] EXPLICIT
                               Extensions OPTIONAL }
    Request     ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
    CertID      ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash OCTET STRING,
                               issuerKeyHash OCTET STRING, serialNumber CertificateSerialNumber }

The nonce (RFC 8954) is taken from requestExtensions; a signed request's signature is
ignored (ikepki does not require signed requests, RFC 6960 §4.1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ocsp.der import DerError, der_integer_value, read_all, read_tlv

NONCE_OID = bytes.fromhex("06092b0601050507300102")  # id-pkix-ocsp-nonce 1.3.6.1.5.5.7.48.1.2
MAX_REQUEST_BYTES = 16 * 1024
MAX_NONCE = 32  # RFC 8954 §2.1: 1..32 octets
MAX_EXTENSIONS = 16

# hashAlgorithm OID content octets -> (name, digest size)
HASH_OIDS: dict[bytes, tuple[str, int]] = {
    bytes.fromhex("2b0e03021a"): ("sha1", 20),
    bytes.fromhex("608648016503040201"): ("sha256", 32),
    bytes.fromhex("608648016503040202"): ("sha384", 48),
    bytes.fromhex("608648016503040203"): ("sha512", 64),
}


class MalformedRequest(ValueError):
    """Not an OCSP request we can answer: the responder sends malformedRequest (RFC 6960 §2.3)."""


@dataclass(frozen=True, slots=True)
class CertIdRequest:
    """One CertID as sent: ``der`` is echoed unchanged in the SingleResponse."""

    der: bytes
    hash_name: str
    name_hash: bytes
    key_hash: bytes
    serial: int


@dataclass(frozen=True, slots=True)
class OcspRequest:
    """The wire request: its CertIDs and the raw nonce extnValue (echoed verbatim)."""

    cert_ids: tuple[CertIdRequest, ...]
    nonce_ext_value: bytes | None


def parse_request(data: bytes, max_requests: int = 32) -> OcspRequest:
    """Parse a DER OCSPRequest; raise :class:`MalformedRequest` on anything else."""
    if len(data) > MAX_REQUEST_BYTES:
        raise MalformedRequest("request too large")
    try:
        return _parse(memoryview(data), max_requests)
    except DerError as exc:
        raise MalformedRequest(str(exc)) from None


def _expect(buf: memoryview, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    t, s, e = read_tlv(buf, pos, end)
    if t != tag:
        raise DerError(f"{what}: unexpected tag {t:#x}")
    return s, e


def _parse(buf: memoryview, max_requests: int) -> OcspRequest:
    total = len(buf)
    s, e = _expect(buf, 0, total, 0x30, "OCSPRequest")
    if e != total:
        raise DerError("trailing data")
    tbs_s, tbs_e = _expect(buf, s, e, 0x30, "TBSRequest")
    rest = read_all(buf, tbs_e, e, 1)
    if rest and rest[0][0] != 0xA0:
        raise DerError("optionalSignature: unexpected tag")
    items = read_all(buf, tbs_s, tbs_e, 4)
    i = 0
    if i < len(items) and items[i][0] == 0xA0:  # version [0] EXPLICIT INTEGER, must be v1 (0)
        vs, ve = _expect(buf, items[i][1], items[i][2], 0x02, "version")
        if der_integer_value(buf, vs, ve) != 0:
            raise DerError("unsupported version")
        i += 1
    if i < len(items) and items[i][0] == 0xA1:  # requestorName
        i += 1
    if i >= len(items) or items[i][0] != 0x30:
        raise DerError("requestList missing")
    cert_ids = _request_list(buf, items[i][1], items[i][2], max_requests)
    i += 1
    nonce = None
    if i < len(items):
        if items[i][0] != 0xA2:
            raise DerError("unexpected element in TBSRequest")
        nonce = _request_extensions(buf, items[i][1], items[i][2])
        i += 1
    if i != len(items):
        raise DerError("unexpected element in TBSRequest")
    return OcspRequest(cert_ids, nonce)


def _request_list(buf: memoryview, start: int, end: int, max_requests: int) -> tuple[CertIdRequest, ...]:
    try:
        requests = read_all(buf, start, end, max_requests)
    except DerError:
        raise MalformedRequest(f"more than {max_requests} requests") from None
    if not requests:
        raise DerError("empty requestList")
    out = []
    for tag, s, e in requests:
        if tag != 0x30:
            raise DerError("Request: unexpected tag")
        parts = read_all(buf, s, e, 2)
        if not parts or parts[0][0] != 0x30 or (len(parts) == 2 and parts[1][0] != 0xA0):
            raise DerError("Request: bad structure")
        out.append(_cert_id(buf, parts[0]))
    return tuple(out)


def _cert_id(buf: memoryview, tlv: tuple[int, int, int]) -> CertIdRequest:
    _, s, e = tlv
    fields = read_all(buf, s, e, 4)
    if len(fields) != 4 or [f[0] for f in fields] != [0x30, 0x04, 0x04, 0x02]:
        raise DerError("CertID: bad structure")
    alg = read_all(buf, fields[0][1], fields[0][2], 2)
    if not alg or alg[0][0] != 0x06 or (len(alg) == 2 and alg[1][0] != 0x05):
        raise DerError("CertID: bad hashAlgorithm")
    known = HASH_OIDS.get(bytes(buf[alg[0][1]:alg[0][2]]))
    if known is None:
        raise DerError("CertID: unsupported hash algorithm")
    name, size = known
    name_hash = bytes(buf[fields[1][1]:fields[1][2]])
    key_hash = bytes(buf[fields[2][1]:fields[2][2]])
    if len(name_hash) != size or len(key_hash) != size:
        raise DerError("CertID: hash length does not match the algorithm")
    serial = der_integer_value(buf, fields[3][1], fields[3][2])
    if serial <= 0 or serial.bit_length() > 160:
        raise DerError("CertID: serial out of range")
    der = _tlv_bytes(buf, s, e)  # the CertID's whole TLV, echoed in the response
    return CertIdRequest(der, name, name_hash, key_hash, serial)


def _tlv_bytes(buf: memoryview, content_start: int, content_end: int) -> bytes:
    length = content_end - content_start
    header = 2 if length < 0x80 else 2 + (length.bit_length() + 7) // 8
    return bytes(buf[content_start - header:content_end])


def _request_extensions(buf: memoryview, start: int, end: int) -> bytes | None:
    """The nonce extnValue (RFC 8954), validated to hold 1..32 octets; other extensions ignored."""
    s, e = _expect(buf, start, end, 0x30, "Extensions")
    if e != end:
        raise DerError("trailing data after Extensions")
    nonce = None
    for tag, xs, xe in read_all(buf, s, e, MAX_EXTENSIONS):
        if tag != 0x30:
            raise DerError("Extension: unexpected tag")
        parts = read_all(buf, xs, xe, 3)
        if len(parts) < 2 or parts[0][0] != 0x06 or parts[-1][0] != 0x04 or (len(parts) == 3 and parts[1][0] != 0x01):
            raise DerError("Extension: bad structure")
        if bytes(buf[parts[0][1] - 2:parts[0][2]]) == NONCE_OID:
            if nonce is not None:
                raise DerError("duplicate nonce")
            nonce = bytes(buf[parts[-1][1]:parts[-1][2]])
            _check_nonce(nonce)
    return nonce


def _check_nonce(value: bytes) -> None:
    """RFC 8954 §2.1: Nonce ::= OCTET STRING (SIZE(1..32)) inside extnValue. Clients that put the
    raw octets into extnValue (older strongSwan/OpenSSL) are accepted with the same bound."""
    inner = value
    try:
        tag, s, e = read_tlv(value, 0, len(value))
        if tag == 0x04 and e == len(value):
            inner = value[s:e]
    except DerError:
        pass
    if not 1 <= len(inner) <= MAX_NONCE:
        raise MalformedRequest(f"nonce must be 1..{MAX_NONCE} octets")
