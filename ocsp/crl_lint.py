"""In-process lint of every CRL's TBSCertList before it is signed (RFC 5280 §5), the CRL
counterpart of :mod:`ca.lint`: a structure the CA signs must parse, carry valid times and
entries, and the extensions §5.2 requires. A failure raises :class:`CrlLintError`; nothing is
signed or published (the previous CRL stays until its nextUpdate).

What is checked:
- TBSCertList: version v2 (§5.1.2.1), the signature AlgorithmIdentifier the signer uses, the
  issuer name of the CA (§5.1.2.3), thisUpdate < nextUpdate, both valid times in the form
  §5.1.2.4/§5.1.2.5 requires (UTCTime 1950-2049, GeneralizedTime otherwise, ``Z``, seconds,
  no fractions), revokedCertificates absent when empty (§5.1.2.6);
- crlExtensions (§5.2): authorityKeyIdentifier with the CA's key id (§5.2.1), cRLNumber
  non-critical, 0 <= n < 2^159 and the expected number (§5.2.3), deltaCRLIndicator critical
  with the base number exactly for a delta (§5.2.4), freshestCRL non-critical and only on a
  full CRL (§5.2.6), nothing else, no duplicates;
- every entry (§5.1.2.6, §5.3): positive serial of at most 20 octets, no duplicate serials, a
  valid revocationDate, only reasonCode (non-critical, a defined code; removeFromCRL only in a
  delta) and invalidityDate (non-critical GeneralizedTime) extensions, each at most once.

Entries are linted once: the publisher's entry cache lints each entry as it is loaded
(:func:`lint_crl_entry`), so a 1M-entry rebuild only checks the envelope and serial
uniqueness.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from ocsp.der import DerError, der_integer_value, der_oid, read_all, read_tlv

_AKI = der_oid("2.5.29.35")[2:]
_CRL_NUMBER = der_oid("2.5.29.20")[2:]
_DELTA_INDICATOR = der_oid("2.5.29.27")[2:]
_FRESHEST = der_oid("2.5.29.46")[2:]
_REASON = der_oid("2.5.29.21")[2:]
_INVALIDITY = der_oid("2.5.29.24")[2:]
_REASON_CODES = {1, 2, 3, 4, 5, 6, 8, 9, 10}  # §5.3.1; 0 (unspecified) SHOULD be absent, 7 is unused
_REMOVE_FROM_CRL = 8
MAX_EXTENSIONS = 16


class CrlLintError(ValueError):
    """The CRL must not be signed."""


def _fail(msg: str) -> CrlLintError:
    return CrlLintError(f"CRL lint: {msg}")


def parse_time(tag: int, raw: bytes, *, generalized_only: bool = False) -> datetime:
    """A DER UTCTime/GeneralizedTime in the RFC 5280 §4.1.2.5 profile, as an aware datetime."""
    text = raw.decode("ascii", "replace")
    if tag == 0x17 and not generalized_only:
        if len(text) != 13 or not text[:12].isdigit() or text[12] != "Z":
            raise _fail(f"bad UTCTime {text!r}")
        yy = int(text[:2])
        year, rest = (1900 + yy if yy >= 50 else 2000 + yy), text[2:12]
    elif tag == 0x18:
        if len(text) != 15 or not text[:14].isdigit() or text[14] != "Z":
            raise _fail(f"bad GeneralizedTime {text!r} (YYYYMMDDHHMMSSZ)")
        year, rest = int(text[:4]), text[4:14]
        if year == 0:
            raise _fail("GeneralizedTime year 0000")
    else:
        raise _fail(f"unexpected time tag 0x{tag:02x}")
    try:
        return datetime(year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]), int(rest[8:10]),
                        tzinfo=UTC)
    except ValueError as exc:
        raise _fail(f"invalid time {text!r}: {exc}") from None


def _validity_time(buf: bytes, start: int, end: int) -> tuple[datetime, int]:
    tag, s, e = read_tlv(buf, start, end)
    at = parse_time(tag, bytes(buf[s:e]))
    if (tag == 0x17) != (1950 <= at.year < 2050):
        raise _fail("time must be UTCTime for 1950-2049 and GeneralizedTime otherwise (§5.1.2.4)")
    return at, e


def _extensions(buf: bytes, start: int, end: int) -> list[tuple[bytes, bool, bytes]]:
    """(OID content, critical, extnValue content) per Extension; duplicates refused."""
    out: list[tuple[bytes, bool, bytes]] = []
    for tag, s, e in read_all(buf, start, end, MAX_EXTENSIONS):
        if tag != 0x30:
            raise _fail("extension is not a SEQUENCE")
        parts = read_all(buf, s, e, 3)
        if len(parts) not in (2, 3) or parts[0][0] != 0x06 or parts[-1][0] != 0x04:
            raise _fail("malformed extension")
        critical = False
        if len(parts) == 3:
            t, bs, be = parts[1]
            if t != 0x01 or be - bs != 1 or buf[bs] not in (0x00, 0xFF):
                raise _fail("malformed critical flag")
            if buf[bs] == 0x00:
                raise _fail("critical FALSE must be omitted in DER (X.690 §11.5)")
            critical = True
        oid = bytes(buf[parts[0][1]:parts[0][2]])
        if any(o == oid for o, _, _ in out):
            raise _fail("duplicate extension")
        out.append((oid, critical, bytes(buf[parts[-1][1]:parts[-1][2]])))
    return out


_TIME = rb"(?:[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9])Z"
# The shapes ca.crl_entry.crl_entry_der writes after the serial: revocationDate (UTCTime, or
# GeneralizedTime from 2050), then optionally reasonCode (a defined code) and invalidityDate.
_FAST_REST = re.compile(
    rb"(?:\x17\x0d(?P<utc>" + _TIME + rb")|\x18\x0f(?P<gen>(?:[0-9]{2})" + _TIME + rb"))"
    rb"(?:\x30(?P<extlen>[\x0c\x1a\x26])"
    rb"(?:\x30\x0a\x06\x03\x55\x1d\x15\x04\x03\x0a\x01(?P<reason>[\x01-\x06\x08-\x0a]))?"
    rb"(?:\x30\x18\x06\x03\x55\x1d\x18\x04\x11\x18\x0f(?P<inv>(?:[0-9]{2})" + _TIME + rb"))?)?", re.DOTALL)


def _fast_entry(entry: bytes, delta: bool) -> int | None:
    """The serial of an entry in one of the shapes the CA writes, fully checked; None: not such a
    shape (the strict general parser decides). About 20x faster than the general parser."""
    n = len(entry)
    if n < 20 or n > 0x7F + 2 or entry[0] != 0x30 or entry[1] != n - 2 or entry[2] != 0x02:
        return None
    sl = entry[3]
    if not 1 <= sl <= 20 or entry[4] >= 0x80 or (entry[4] == 0 and (sl == 1 or entry[5] < 0x80)):
        return None
    m = _FAST_REST.fullmatch(entry, 4 + sl)
    if m is None:
        return None
    extlen = m["extlen"]
    if extlen is not None and extlen[0] != (12 if m["reason"] else 0) + (26 if m["inv"] else 0):
        return None
    if m["reason"] == b"\x08" and not delta:
        return None
    if m["utc"] is not None:
        parse_time(0x17, m["utc"])
    elif 1950 <= parse_time(0x18, m["gen"]).year < 2050:
        return None  # GeneralizedTime where §5.1.2.4 wants UTCTime: the general parser reports it
    if m["inv"] is not None:
        parse_time(0x18, m["inv"])
    return int.from_bytes(entry[4:4 + sl], "big")


def lint_crl_entry(entry: bytes, *, delta: bool = True) -> int:
    """One revokedCertificates element (§5.1.2.6, §5.3); returns its serial."""
    fast = _fast_entry(entry, delta)
    if fast is not None:
        return fast
    try:
        tag, s, e = read_tlv(entry, 0, len(entry))
        if tag != 0x30 or e != len(entry):
            raise _fail("entry is not one SEQUENCE")
        tag, a, b = read_tlv(entry, s, e)
        if tag != 0x02:
            raise _fail("entry serial is not an INTEGER")
        serial = der_integer_value(entry, a, b)
        if serial <= 0 or b - a > 20:
            raise _fail(f"entry serial {serial:x} is not positive or longer than 20 octets")
        _, pos = _validity_time(entry, b, e)
        if pos < e:
            tag, x, y = read_tlv(entry, pos, e)
            if tag != 0x30 or y != e or x == y:
                raise _fail(f"entry {serial:x}: malformed crlEntryExtensions")
            for oid, critical, value in _extensions(entry, x, y):
                if critical:
                    raise _fail(f"entry {serial:x}: reasonCode/invalidityDate must be non-critical")
                vt, vs, ve = read_tlv(value, 0, len(value))
                if ve != len(value):
                    raise _fail(f"entry {serial:x}: trailing data in an extension value")
                if oid == _REASON:
                    code = value[vs] if vt == 0x0A and ve - vs == 1 else -1
                    if code not in _REASON_CODES or (code == _REMOVE_FROM_CRL and not delta):
                        raise _fail(f"entry {serial:x}: invalid reasonCode")
                elif oid == _INVALIDITY:
                    parse_time(vt, value[vs:ve], generalized_only=True)  # §5.3.2: GeneralizedTime
                else:
                    raise _fail(f"entry {serial:x}: unexpected entry extension")
        return serial
    except DerError as exc:
        raise _fail(f"entry is not valid DER: {exc}") from None


def lint_crl_tbs(tbs: bytes, *, alg_id: bytes, issuer_name_der: bytes, key_id: bytes, number: int,
                 delta_base: int | None, entries: Sequence[bytes], entries_linted: bool = False) -> None:
    """Lint a TBSCertList built from ``entries`` before signing. Each entry is linted here unless
    ``entries_linted`` (the publisher's entry cache lints each once as it loads it, keyed by serial,
    so a 1M-entry rebuild does not parse every entry again)."""
    delta = delta_base is not None
    if not entries_linted:
        serials = [lint_crl_entry(entry, delta=delta) for entry in entries]
        if len(set(serials)) != len(serials):
            raise _fail("a serial is listed twice")
    try:
        tag, s, e = read_tlv(tbs, 0, len(tbs))
        if tag != 0x30 or e != len(tbs):
            raise _fail("TBSCertList is not one SEQUENCE")
        fields = read_all(tbs, s, e, 7)
        if len(fields) < 6:
            raise _fail("TBSCertList is truncated")
        vt, vs, ve = fields[0]
        if vt != 0x02 or tbs[vs:ve] != b"\x01":
            raise _fail("version must be v2 (§5.1.2.1)")
        if tbs[_start(fields[1]):fields[1][2]] != alg_id:
            raise _fail("signature AlgorithmIdentifier differs from the signer's (§5.1.2.2)")
        if tbs[_start(fields[2]):fields[2][2]] != issuer_name_der or fields[2][2] == fields[2][1]:
            raise _fail("issuer is not the CA's (non-empty) name (§5.1.2.3)")
        this_update, _ = _validity_time(tbs, _start(fields[3]), fields[3][2])
        if fields[4][0] not in (0x17, 0x18):
            raise _fail("nextUpdate missing (§5.1.2.5: conforming CAs include it)")
        next_update, _ = _validity_time(tbs, _start(fields[4]), fields[4][2])
        if next_update <= this_update:
            raise _fail("nextUpdate is not after thisUpdate")
        rest = fields[5:]
        if rest[0][0] == 0x30:
            _, rs, re_ = rest.pop(0)
            if rs == re_:
                raise _fail("revokedCertificates present but empty (§5.1.2.6: omit it)")
            if sum(len(x) for x in entries) != re_ - rs:
                raise _fail("revokedCertificates does not hold exactly the given entries")
        elif entries:
            raise _fail("revokedCertificates missing")
        if len(rest) != 1 or rest[0][0] != 0xA0:
            raise _fail("crlExtensions missing or followed by other data")
        _check_extensions(tbs, rest[0], key_id, number, delta_base)
    except DerError as exc:
        raise _fail(f"TBSCertList is not valid DER: {exc}") from None


def _start(tlv: tuple[int, int, int]) -> int:
    """The offset of a TLV's tag, from its (tag, content start, content end)."""
    length = tlv[2] - tlv[1]
    header = 2 if length < 0x80 else 2 + (length.bit_length() + 7) // 8
    return tlv[1] - header


def _check_extensions(tbs: bytes, tlv: tuple[int, int, int], key_id: bytes, number: int,
                      delta_base: int | None) -> None:
    _, s, e = tlv
    st, ss, se = read_tlv(tbs, s, e)
    if st != 0x30 or se != e:
        raise _fail("crlExtensions is not one SEQUENCE")
    exts = {oid: (critical, value) for oid, critical, value in _extensions(tbs, ss, se)}
    allowed = {_AKI, _CRL_NUMBER, _DELTA_INDICATOR if delta_base is not None else _FRESHEST}
    if set(exts) - allowed:
        raise _fail("unexpected CRL extension")
    if _AKI not in exts or _CRL_NUMBER not in exts:
        raise _fail("authorityKeyIdentifier and cRLNumber are required (§5.2.1, §5.2.3)")
    critical, value = exts[_AKI]
    _, a, b = read_tlv(value, 0, len(value))
    kt, ks, ke = read_tlv(value, a, b)
    if critical or kt != 0x80 or value[ks:ke] != key_id:
        raise _fail("authorityKeyIdentifier must be non-critical and name the CA's key (§5.2.1)")
    critical, value = exts[_CRL_NUMBER]
    nt, ns, ne = read_tlv(value, 0, len(value))
    found = der_integer_value(value, ns, ne) if nt == 0x02 else -1
    if critical or found != number or not 0 <= found < 1 << 159:
        raise _fail("cRLNumber must be non-critical, 0..2^159 and the expected number (§5.2.3)")
    if delta_base is not None:
        if _DELTA_INDICATOR not in exts:
            raise _fail("a delta CRL needs deltaCRLIndicator (§5.2.4)")
        critical, value = exts[_DELTA_INDICATOR]
        bt, bs, be = read_tlv(value, 0, len(value))
        if not critical or bt != 0x02 or der_integer_value(value, bs, be) != delta_base or delta_base >= number:
            raise _fail("deltaCRLIndicator must be critical and name an older base CRL (§5.2.4)")
    elif _FRESHEST in exts and exts[_FRESHEST][0]:
        raise _fail("freshestCRL must be non-critical (§5.2.6)")
