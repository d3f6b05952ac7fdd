"""Minimal strict DER reading and writing for OCSP and CRL structures (X.690 §10).

The reader works on ``memoryview`` slices without copying and raises :class:`DerError` on
anything that is not definite-length DER within bounds. Writers build on
:mod:`ca.crl_entry`'s helpers so the CRL entry DER and the list around it agree.
"""

from __future__ import annotations

from ca.der import der_generalized_time, der_integer, der_length, der_time, der_tlv  # noqa: F401  (re-exported)

MAX_DEPTH_LENGTH_OCTETS = 4  # lengths above 4 GiB are never legitimate here


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
        if n == 0 or n > MAX_DEPTH_LENGTH_OCTETS:
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


def der_integer_value(buf: bytes | memoryview, start: int, end: int) -> int:
    """A DER INTEGER's content as a Python int (minimal encoding enforced)."""
    if end <= start:
        raise DerError("empty integer")
    if end - start > 1 and ((buf[start] == 0 and buf[start + 1] < 0x80) or (buf[start] == 0xFF and
                                                                            buf[start + 1] >= 0x80)):
        raise DerError("non-minimal integer")
    return int.from_bytes(bytes(buf[start:end]), "big", signed=True)

