"""DER of one CRL entry (RFC 5280 §5.1.2.6 revokedCertificates element), computed once at
revocation and stored, so a CRL rebuild is concatenation plus one signature."""

from __future__ import annotations

from datetime import UTC, datetime

_REASON_OID = bytes.fromhex("0603551d15")  # id-ce-cRLReasons 2.5.29.21
_INVALIDITY_OID = bytes.fromhex("0603551d18")  # id-ce-invalidityDate 2.5.29.24


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


def crl_entry_der(serial: int, revoked_at: datetime, reason_code: int | None,
                  invalidity_date: datetime | None = None) -> bytes:
    """reasonCode is omitted for ``unspecified`` (RFC 5280 §5.3.1 SHOULD)."""
    exts = b""
    if reason_code:
        exts += der_tlv(0x30, _REASON_OID + der_tlv(0x04, der_tlv(0x0A, bytes([reason_code]))))
    if invalidity_date is not None:
        exts += der_tlv(0x30, _INVALIDITY_OID + der_tlv(0x04, der_generalized_time(invalidity_date)))
    body = der_integer(serial) + der_time(revoked_at)
    if exts:
        body += der_tlv(0x30, exts)
    return der_tlv(0x30, body)
