"""OCSP request parsing (RFC 6960 §4.1), strict and bounded, without allocating per element.

    OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }
    TBSRequest  ::= SEQUENCE { version [0] EXPLICIT Version DEFAULT v1, requestorName [1] EXPLICIT GeneralName
                               OPTIONAL, requestList SEQUENCE OF Request, requestExtensions [2] EXPLICIT
                               Extensions OPTIONAL }
    Request     ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
    CertID      ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash OCTET STRING,
                               issuerKeyHash OCTET STRING, serialNumber CertificateSerialNumber }

The nonce (RFC 8954) is taken from requestExtensions. Everything else a request may carry is
checked, so that nothing unexpected rides along (and nothing request-specific needs caching):

- ``optionalSignature`` must be a well-formed ``Signature`` and, per §4.1.2 ("the requestor SHALL
  specify its name in the requestorName field"), come with ``requestorName``; it is reported as
  :attr:`OcspRequest.signed` (the responder, which authorizes no requestor, refuses it).
- ``requestorName`` must hold exactly one GeneralName (unauthenticated, otherwise ignored:
  RFC 5019 §2.1.2).
- Extensions (request and per-CertID) are well-formed, not repeated, and "unrecognized extensions
  MUST be ignored (unless they have the critical flag set and are not understood)" (§4.4): an
  unknown critical one is a request this responder cannot process, i.e. malformedRequest.
- No trailing data anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from ca.der import DerError, der_integer_value, read_all, read_tlv, tlv_start

NONCE_OID = bytes.fromhex("06092b0601050507300102")  # id-pkix-ocsp-nonce 1.3.6.1.5.5.7.48.1.2
MAX_REQUEST_BYTES = 16 * 1024
MAX_NONCE = 32  # RFC 8954 §2.1: 1..32 octets
MAX_EXTENSIONS = 16
MAX_SIGNATURE_CERTS = 8

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
    signed: bool = False  # optionalSignature present (well-formed, with requestorName)


def parse_request(data: bytes, max_requests: int = 32) -> OcspRequest:
    """Parse a DER OCSPRequest; raise :class:`MalformedRequest` on anything else."""
    if len(data) > MAX_REQUEST_BYTES:
        raise MalformedRequest("request too large")
    try:
        return _parse(memoryview(data), max_requests)
    except DerError as exc:
        raise MalformedRequest(str(exc)) from None


def canonical_cert_id(body: bytes) -> bytes | None:
    """The CertID TLV of a minimal single-CertID request, by its framing alone, or None.

    ``OCSPRequest{TBSRequest{requestList{Request{CertID}}}}`` with nothing else: four SEQUENCE
    headers each spanning exactly to the end of ``body``. No parse of the CertID itself: the
    caller only uses the result as a key into what strict parsing produced before."""
    end = len(body)
    if end < 10:
        return None
    if end < 130:  # every length short-form (SHA-1/SHA-256 CertIDs): one comparison per header
        if body[0:8:2] == b"\x30\x30\x30\x30" and body[1:8:2] == bytes((end - 2, end - 4, end - 6, end - 8)):
            return body[8:]
        if body[1] < 0x80:
            return None
    pos = 0
    for _ in range(4):
        if pos + 2 > end or body[pos] != 0x30:
            return None
        first = body[pos + 1]
        if first < 0x80:
            pos += 2
            length = first
        elif first == 0x81 and pos + 3 <= end and body[pos + 2] >= 0x80:
            length = body[pos + 2]
            pos += 3
        elif first == 0x82 and pos + 4 <= end and body[pos + 2] != 0:
            length = (body[pos + 2] << 8) | body[pos + 3]
            pos += 4
        else:
            return None
        if pos + length != end:
            return None
    return body[pos:]


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
    signed = bool(rest)
    if signed:
        if rest[0][0] != 0xA0:
            raise DerError("optionalSignature: unexpected tag")
        _signature(buf, rest[0][1], rest[0][2])
    items = read_all(buf, tbs_s, tbs_e, 4)
    i = 0
    if i < len(items) and items[i][0] == 0xA0:  # version [0] EXPLICIT INTEGER, must be v1 (0)
        vs, ve = _expect(buf, items[i][1], items[i][2], 0x02, "version")
        if ve != items[i][2]:
            raise DerError("version: trailing data")
        if der_integer_value(buf, vs, ve) != 0:
            raise DerError("unsupported version")
        i += 1
    named = i < len(items) and items[i][0] == 0xA1
    if named:  # requestorName [1] EXPLICIT GeneralName: exactly one element
        if len(read_all(buf, items[i][1], items[i][2], 1)) != 1:
            raise DerError("requestorName: empty")
        i += 1
    if signed and not named:
        raise DerError("signed request without requestorName (RFC 6960 §4.1.2)")
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
    return OcspRequest(cert_ids, nonce, signed)


def _signature(buf: memoryview, start: int, end: int) -> None:
    """Signature ::= SEQUENCE { signatureAlgorithm AlgorithmIdentifier, signature BIT STRING,
    certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL } (§4.1.1), structure only."""
    s, e = _expect(buf, start, end, 0x30, "Signature")
    if e != end:
        raise DerError("optionalSignature: trailing data")
    parts = read_all(buf, s, e, 3)
    if len(parts) < 2 or parts[0][0] != 0x30 or parts[1][0] != 0x03 or (len(parts) == 3 and parts[2][0] != 0xA0):
        raise DerError("optionalSignature: bad structure")
    if not read_all(buf, parts[0][1], parts[0][2], 2) or buf[parts[0][1]] != 0x06:
        raise DerError("optionalSignature: bad signatureAlgorithm")
    if parts[1][2] - parts[1][1] < 2:
        raise DerError("optionalSignature: empty signature")
    if len(parts) == 3:
        cs, ce = _expect(buf, parts[2][1], parts[2][2], 0x30, "optionalSignature certs")
        if ce != parts[2][2] or any(t != 0x30 for t, _, _ in read_all(buf, cs, ce, MAX_SIGNATURE_CERTS)):
            raise DerError("optionalSignature: bad certs")


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
        if len(parts) == 2:  # singleRequestExtensions: none understood (§4.4.6 service locator is ignored)
            _extensions(buf, parts[1][1], parts[1][2], frozenset())
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
    der = bytes(buf[tlv_start(s, e):e])  # the CertID's whole TLV, echoed in the response
    return CertIdRequest(der, name, name_hash, key_hash, serial)


def _request_extensions(buf: memoryview, start: int, end: int) -> bytes | None:
    """The nonce extnValue (RFC 8954), validated to hold 1..32 octets; see :func:`_extensions`."""
    nonce = _extensions(buf, start, end, frozenset({NONCE_OID})).get(NONCE_OID)
    if nonce is not None:
        _check_nonce(nonce)
    return nonce


def _extensions(buf: memoryview, start: int, end: int, understood: frozenset[bytes]) -> dict[bytes, bytes]:
    """``[n] EXPLICIT Extensions`` content -> {extnID TLV: extnValue} for the ``understood`` ones.

    Extension ::= SEQUENCE { extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT FALSE, extnValue OCTET
    STRING } (RFC 5280 §4.1): DER omits a FALSE critical flag, an extension appears at most once, and
    an unknown critical one is refused (RFC 6960 §4.4)."""
    s, e = _expect(buf, start, end, 0x30, "Extensions")
    if e != end:
        raise DerError("trailing data after Extensions")
    found: dict[bytes, bytes] = {}
    seen: set[bytes] = set()
    for tag, xs, xe in read_all(buf, s, e, MAX_EXTENSIONS):
        if tag != 0x30:
            raise DerError("Extension: unexpected tag")
        parts = read_all(buf, xs, xe, 3)
        if len(parts) < 2 or parts[0][0] != 0x06 or parts[-1][0] != 0x04 or (len(parts) == 3 and parts[1][0] != 0x01):
            raise DerError("Extension: bad structure")
        oid = bytes(buf[tlv_start(parts[0][1], parts[0][2]):parts[0][2]])
        if oid in seen:
            raise DerError("duplicate extension")
        seen.add(oid)
        critical = False
        if len(parts) == 3:
            if parts[1][2] - parts[1][1] != 1 or buf[parts[1][1]] != 0xFF:
                raise DerError("Extension: critical must be TRUE when present (DER)")
            critical = True
        if oid in understood:
            found[oid] = bytes(buf[parts[-1][1]:parts[-1][2]])
        elif critical:
            raise DerError("unsupported critical extension")
    return found


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
