"""Lint of every OCSP ResponseData before it is signed (Boulder's lint-before-sign idea, as
``ca.lint`` does for certificates): a response that fails is never signed; the responder answers
``internalError`` (RFC 6960 §2.3) instead.

Checked on the DER about to be signed, with the strict reader of :mod:`ocsp.der`:

- ResponseData (RFC 6960 §4.2.1): version absent (v1), responderID byKey (SHA-1, 20 octets,
  §4.2.2.3), producedAt, 1..``MAX_SINGLES`` SingleResponses, no trailing data.
- Every GeneralizedTime as RFC 5280 §4.1.2.5.2 requires: ``YYYYMMDDHHMMSSZ``, a real date, year
  1950..9999 (a wrongly encoded year below 1000 comes out shorter and is caught here).
- SingleResponse: a CertID of four fields; certStatus good / revoked (revocationTime, optional
  CRLReason from RFC 5280 §5.3.1 without the unused value 7) / unknown; thisUpdate; nextUpdate
  present (RFC 5019 §2.2.4) and after thisUpdate; revocationTime <= thisUpdate <= producedAt.
- responseExtensions: only the nonce (RFC 8954 §2.1: 1..32 octets) and extended revoke
  (§4.4.8, NULL), each at most once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ocsp.der import DerError, read_all, read_tlv

MAX_SINGLES = 256
_NONCE = bytes.fromhex("06092b0601050507300102")
_EXTENDED_REVOKE = bytes.fromhex("06092b0601050507300109")
_REASONS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10})


class LintError(ValueError):
    """The ResponseData must not be signed."""


def lint_response_data(tbs: bytes) -> None:
    """Raise :class:`LintError` unless ``tbs`` is a ResponseData ikepki may sign."""
    try:
        _lint(memoryview(tbs))
    except DerError as exc:
        raise LintError(f"OCSP lint: {exc}") from None


def _fail(msg: str) -> DerError:
    return DerError(msg)


def _lint(buf: memoryview) -> None:
    tag, s, e = read_tlv(buf, 0, len(buf))
    if tag != 0x30 or e != len(buf):
        raise _fail("ResponseData is not one SEQUENCE")
    items = read_all(buf, s, e, 4)
    tags = [t for t, _, _ in items]
    if tags[:3] != [0xA2, 0x18, 0x30] or tags[3:] not in ([], [0xA1]):
        raise _fail(f"ResponseData fields {[hex(t) for t in tags]}: want byKey, producedAt, responses[, ext]")
    kt, ks, ke = read_tlv(buf, items[0][1], items[0][2])
    if kt != 0x04 or ke - ks != 20 or ke != items[0][2]:
        raise _fail("responderID byKey must be a 20-octet SHA-1 key hash")
    produced = _time(buf, items[1][1], items[1][2], "producedAt")
    singles = read_all(buf, items[2][1], items[2][2], MAX_SINGLES)
    if not singles:
        raise _fail("no SingleResponse")
    for tag, ss, se in singles:
        if tag != 0x30:
            raise _fail("SingleResponse is not a SEQUENCE")
        _single(buf, ss, se, produced)
    if len(items) == 4:
        _extensions(buf, items[3][1], items[3][2])


def _time(buf: memoryview, s: int, e: int, what: str) -> datetime:
    text = bytes(buf[s:e])
    if len(text) != 15 or not text[:14].isdigit() or text[14:] != b"Z":
        raise _fail(f"{what}: {text!r} is not YYYYMMDDHHMMSSZ")
    year = int(text[0:4])
    if not 1950 <= year <= 9999:
        raise _fail(f"{what}: year {year} out of range")
    try:
        return datetime(year, int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:14]),
                        tzinfo=UTC)
    except ValueError:
        raise _fail(f"{what}: {text!r} is not a date") from None


def _single(buf: memoryview, s: int, e: int, produced: datetime) -> None:
    parts = read_all(buf, s, e, 5)
    if len(parts) != 4 or parts[0][0] != 0x30 or parts[2][0] != 0x18 or parts[3][0] != 0xA0:
        raise _fail("SingleResponse must be certID, certStatus, thisUpdate, nextUpdate")
    cert_id = read_all(buf, parts[0][1], parts[0][2], 4)
    if [t for t, _, _ in cert_id] != [0x30, 0x04, 0x04, 0x02]:
        raise _fail("CertID must be hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber")
    this_update = _time(buf, parts[2][1], parts[2][2], "thisUpdate")
    nt, ns, ne = read_tlv(buf, parts[3][1], parts[3][2])
    if nt != 0x18 or ne != parts[3][2]:
        raise _fail("nextUpdate must be one GeneralizedTime")
    if _time(buf, ns, ne, "nextUpdate") <= this_update:
        raise _fail("nextUpdate not after thisUpdate")
    if this_update > produced:
        raise _fail("thisUpdate after producedAt")
    tag, cs, ce = parts[1]
    if tag in (0x80, 0x82):  # good / unknown: [0] / [2] IMPLICIT NULL
        if ce != cs:
            raise _fail("good/unknown status must be empty")
    elif tag == 0xA1:  # revoked: RevokedInfo { revocationTime, [0] EXPLICIT CRLReason OPTIONAL }
        info = read_all(buf, cs, ce, 2)
        if not info or info[0][0] != 0x18:
            raise _fail("RevokedInfo must start with revocationTime")
        if _time(buf, info[0][1], info[0][2], "revocationTime") > this_update:
            raise _fail("revocationTime after thisUpdate")
        if len(info) == 2:
            rt, rs, re_ = read_tlv(buf, info[1][1], info[1][2])
            if info[1][0] != 0xA0 or rt != 0x0A or re_ - rs != 1 or buf[rs] not in _REASONS:
                raise _fail("revocationReason must be one valid CRLReason")
    else:
        raise _fail(f"certStatus tag {tag:#x}")


def _extensions(buf: memoryview, s: int, e: int) -> None:
    tag, xs, xe = read_tlv(buf, s, e)
    if tag != 0x30 or xe != e:
        raise _fail("responseExtensions must be one SEQUENCE")
    seen: set[bytes] = set()
    for tag, es, ee in read_all(buf, xs, xe, 4):
        parts = read_all(buf, es, ee, 3) if tag == 0x30 else []
        if len(parts) != 2 or parts[0][0] != 0x06 or parts[1][0] != 0x04:
            raise _fail("extension must be extnID, extnValue (non-critical)")
        oid = bytes(buf[parts[0][1] - 2:parts[0][2]])  # the OID's TLV (short length: OIDs here are short)
        if oid in seen:
            raise _fail("duplicate response extension")
        seen.add(oid)
        value = bytes(buf[parts[1][1]:parts[1][2]])
        if oid == _NONCE:
            inner = value
            if value[:1] == b"\x04" and len(value) >= 2 and value[1] == len(value) - 2:
                inner = value[2:]
            if not 1 <= len(inner) <= 32:
                raise _fail("nonce must be 1..32 octets (RFC 8954)")
        elif oid == _EXTENDED_REVOKE:
            if value != b"\x05\x00":
                raise _fail("extended revoke must be NULL")
        else:
            raise _fail("unexpected response extension")
