"""Hypothesis over the CRL lint's parsers: every entry the CA can write passes and yields its
serial; random or mutated DER is refused with CrlLintError only (never another exception); the
fast path and the general parser agree."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.crl_entry import crl_entry_der
from ca.csr import without_challenge_password
from ca.errors import PKIError
from ocsp.crl import build_tbs, crl_extensions
from ocsp.crl_lint import CrlLintError, _fast_entry, lint_crl_entry, lint_crl_tbs

times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
serials = st.integers(min_value=1, max_value=(1 << 159) - 1)
reasons = st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10])


@settings(max_examples=400, deadline=None)
@given(serials, times, reasons, st.none() | times)
def test_every_entry_the_ca_writes_passes(serial: int, at: datetime, reason: int | None,
                                          invalidity: datetime | None) -> None:
    entry = crl_entry_der(serial, at, reason, invalidity)
    assert lint_crl_entry(entry, delta=True) == serial
    if reason != 8:
        assert lint_crl_entry(entry, delta=False) == serial


def _lint_or_refuse(data: bytes) -> None:
    try:
        lint_crl_entry(data)
    except CrlLintError:
        return


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_random_entries_are_refused_cleanly(data: bytes) -> None:
    _lint_or_refuse(data)


@settings(max_examples=500, deadline=None)
@given(serials, times, reasons, st.none() | times, st.data())
def test_mutated_entries_are_refused_or_valid(serial: int, at: datetime, reason: int | None,
                                              invalidity: datetime | None, data: st.DataObject) -> None:
    entry = bytearray(crl_entry_der(serial, at, reason, invalidity))
    i = data.draw(st.integers(0, len(entry) - 1))
    entry[i] = data.draw(st.integers(0, 255))
    fast = _fast_entry(bytes(entry), True)
    try:
        general = lint_crl_entry(bytes(entry))
    except CrlLintError:
        assert fast is None  # the fast path never accepts what the general parser refuses
        return
    assert fast is None or fast == general


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_tbs_never_crashes(data: st.DataObject) -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    entries = [crl_entry_der(5, now, 1), crl_entry_der(7, now, 6, now - timedelta(hours=1))]
    alg, key_id = b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02", b"\x01" * 20
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz CA")]).public_bytes()
    tbs = bytearray(build_tbs(name, alg, b"".join(entries), now, now + timedelta(hours=1),
                              crl_extensions(key_id, 3, None, "http://x/d.crl")))
    lint_crl_tbs(bytes(tbs), alg_id=alg, issuer_name_der=name, key_id=key_id, number=3, delta_base=None,
                 entries=entries)  # unmutated: passes
    i = data.draw(st.integers(0, len(tbs) - 1))
    tbs[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CrlLintError):
        lint_crl_tbs(bytes(tbs), alg_id=alg, issuer_name_der=name, key_id=key_id, number=3, delta_base=None,
                     entries=entries, entries_linted=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_challenge_redaction_never_crashes(data: bytes) -> None:
    with contextlib.suppress(PKIError):
        without_challenge_password(data)
