"""Minimal DER (X.690) shared by every hand-built or hand-read structure: CRL entries and TBS
lists, OCSP requests and responses, certs-only PKCS#7 (EST, SCEP), SCEP CMS. Hand encoding is used
where cryptography has no builder or where its builders are too slow for the hot path.

The one strict reader (:func:`read_tlv`, :func:`read_all`) works on ``memoryview`` slices without
copying and raises :class:`DerError` on anything that is not definite-length DER within bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + der_length(len(body)) + body


def der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True) if value else b"\x00"
    return der_tlv(0x02, body)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a DER time needs an aware datetime (naive times are ambiguous)")
    return at.astimezone(UTC)


def der_time(at: datetime) -> bytes:
    """RFC 5280 §4.1.2.5 / §5.1.2.4: UTCTime (YYMMDDHHMMSSZ) for 1950-2049, GeneralizedTime otherwise."""
    at = _utc(at)
    if 1950 <= at.year < 2050:
        return der_tlv(0x17, f"{at.year % 100:02d}{at.month:02d}{at.day:02d}{at.hour:02d}{at.minute:02d}"
                             f"{at.second:02d}Z".encode())
    return der_generalized_time(at)


@lru_cache(maxsize=512)  # OCSP: every response of one second carries the same few times
def der_generalized_time(at: datetime) -> bytes:
    """GeneralizedTime as RFC 5280 §4.1.2.5.2 requires: YYYYMMDDHHMMSSZ, a 4-digit year (zero-padded:
    ``strftime("%Y")`` writes year 1 as "1"), UTC, no fractional seconds (truncated)."""
    at = _utc(at)
    return der_tlv(0x18, f"{at.year:04d}{at.month:02d}{at.day:02d}{at.hour:02d}{at.minute:02d}{at.second:02d}Z"
                   .encode())


def der_seq(*parts: bytes) -> bytes:
    return der_tlv(0x30, b"".join(parts))


def der_octets(value: bytes) -> bytes:
    return der_tlv(0x04, value)


def der_bool(value: bool) -> bytes:
    return b"\x01\x01" + (b"\xff" if value else b"\x00")


def explicit(n: int, body: bytes) -> bytes:
    """[n] EXPLICIT (context-specific, constructed)."""
    return der_tlv(0xA0 | n, body)


def der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return der_tlv(0x06, bytes(body))


def der_set_of(components: list[bytes]) -> bytes:
    """SET OF: components in ascending order of their encodings (X.690 §11.6: compared as octet
    strings, the shorter one padded with trailing zero octets)."""
    width = max((len(c) for c in components), default=0)
    ordered = sorted((bytes(c).ljust(width, b"\0"), bytes(c)) for c in components)
    return der_tlv(0x31, b"".join(c for _padded, c in ordered))


def certs_only(certificates: list[bytes], crls: list[bytes] | None = None) -> bytes:
    """A degenerate certs-only SignedData (RFC 5652 §5, RFC 7030 §4.1.3, RFC 8894 §3.4): version 1,
    no digest algorithms, no content, no signers; ``certificates`` [0] IMPLICIT SET OF, DER-sorted,
    and for SCEP GetCRL the DER ``crls`` [1] IMPLICIT SET OF."""
    body = _VERSION_1_NO_DIGESTS_DATA
    if certificates or not crls:  # an empty certificates [0] when there is nothing else
        body += b"\xa0" + der_set_of(certificates)[1:]  # [0] IMPLICIT replaces the SET tag
    if crls:
        body += b"\xa1" + der_set_of(crls)[1:]
    return der_seq(_OID_SIGNED_DATA, explicit(0, der_seq(body, b"\x31\x00")))


_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")  # id-signedData 1.2.840.113549.1.7.2
_VERSION_1_NO_DIGESTS_DATA = bytes.fromhex("020101") + bytes.fromhex("3100") + der_tlv(
    0x30, bytes.fromhex("06092a864886f70d010701"))  # version 1, digestAlgorithms {}, {id-data}

# -- reading ---------------------------------------------------------------------------------------

MAX_LENGTH_OCTETS = 4  # lengths above 4 GiB are never legitimate here


class DerError(ValueError):
    """The input is not the DER we accept."""


def read_tlv(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int, int]:
    """Read one TLV at ``pos`` (must end at or before ``end``): (tag, content start, content end).

    Only single-octet tags (no high-tag-number form) and definite minimal lengths are accepted.
    """
    if pos + 2 > end:
        raise DerError("truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not used here")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > MAX_LENGTH_OCTETS:
            raise DerError("indefinite or oversized length")
        if pos + n > end:
            raise DerError("truncated length")
        length = int.from_bytes(buf[pos:pos + n], "big")
        if length < 0x80 or buf[pos] == 0:
            raise DerError("non-minimal length")
        pos += n
    if pos + length > end:
        raise DerError("truncated value")
    return tag, pos, pos + length


def read_all(buf: bytes | memoryview, start: int, end: int, limit: int) -> list[tuple[int, int, int]]:
    """Every TLV between ``start`` and ``end`` (a SEQUENCE's content), at most ``limit`` of them."""
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        if len(out) >= limit:
            raise DerError("too many elements")
        tlv = read_tlv(buf, pos, end)
        out.append(tlv)
        pos = tlv[2]
    return out


def tlv_start(content_start: int, content_end: int) -> int:
    """Where the (minimal, single-octet-tag) TLV whose content spans ``content_start:content_end`` begins."""
    return content_start - 1 - len(der_length(content_end - content_start))


def der_integer_value(buf: bytes | memoryview, start: int, end: int) -> int:
    """A DER INTEGER's content as a Python int (minimal encoding enforced)."""
    if end <= start:
        raise DerError("empty integer")
    if end - start > 1 and ((buf[start] == 0 and buf[start + 1] < 0x80) or (buf[start] == 0xFF and
                                                                            buf[start + 1] >= 0x80)):
        raise DerError("non-minimal integer")
    return int.from_bytes(bytes(buf[start:end]), "big", signed=True)
