"""Minimal DER encoders (X.690) shared by every hand-built structure: CRL entries and TBS
lists, OCSP responses, EST certs-only PKCS#7, SCEP CMS. Hand encoding is used where
cryptography has no builder or where its builders are too slow for the hot path."""

from __future__ import annotations

from datetime import UTC, datetime


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


def der_time(at: datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime after (RFC 5280 §5.1.2.4)."""
    at = at.astimezone(UTC)
    if at.year < 2050:
        return der_tlv(0x17, at.strftime("%y%m%d%H%M%SZ").encode())
    return der_tlv(0x18, at.strftime("%Y%m%d%H%M%SZ").encode())


def der_generalized_time(at: datetime) -> bytes:
    return der_tlv(0x18, at.astimezone(UTC).strftime("%Y%m%d%H%M%SZ").encode())
