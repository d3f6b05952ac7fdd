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


def der_generalized_time(at: datetime) -> bytes:
    """GeneralizedTime as RFC 5280 §4.1.2.5.2 requires: YYYYMMDDHHMMSSZ, a 4-digit year (zero-padded:
    ``strftime("%Y")`` writes year 1 as "1"), UTC, no fractional seconds (truncated)."""
    at = _utc(at)
    return der_tlv(0x18, f"{at.year:04d}{at.month:02d}{at.day:02d}{at.hour:02d}{at.minute:02d}{at.second:02d}Z"
                   .encode())
