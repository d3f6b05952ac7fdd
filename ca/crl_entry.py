"""DER of one CRL entry (RFC 5280 §5.1.2.6 revokedCertificates element), computed once at
revocation and stored, so a CRL rebuild is concatenation plus one signature."""

from __future__ import annotations

from datetime import datetime

from ca.der import der_generalized_time, der_integer, der_length, der_time, der_tlv

__all__ = ["crl_entry_der", "der_integer", "der_length", "der_time", "der_tlv"]

_REASON_OID = bytes.fromhex("0603551d15")  # id-ce-cRLReasons 2.5.29.21
_INVALIDITY_OID = bytes.fromhex("0603551d18")  # id-ce-invalidityDate 2.5.29.24


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
