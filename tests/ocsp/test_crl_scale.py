"""Scale: a CRL of 1,000,000 precomputed entries built by the hand-written builder, and a CRL built
from entries stored in a fresh SQLite through the publisher's entry cache (full load, then
an incremental update from the outbox). Times are printed, not asserted (bench/crl.py compares)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, update

from ca.crl_entry import crl_entry_der, der_time
from ca.keys.signer import SigningKey
from ca.store import migrate
from ca.store.db import Database
from ca.store.sql import CERTS, OUTBOX
from ocsp.crl import CrlIssuer, build_crl
from ocsp.crl_publisher import EntryCache

pytestmark = pytest.mark.slow
STORE_ENTRIES = 20_000  # the store path; bench/crl.py runs it at 10k/100k/1M
REASON_KEY_COMPROMISE = bytes.fromhex("300c300a0603551d1504030a0101")


def software_issuer() -> CrlIssuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scale CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.BasicConstraints(True, None), True).sign(key, hashes.SHA256()))
    return CrlIssuer("scale", cert, SigningKey("software:scale", key), "http://127.0.0.1/crl/scale-delta.crl")


def fast_entries(n: int, at: datetime) -> tuple[list[bytes], list[int]]:
    """n CRL entries (20-octet serials, keyCompromise) assembled from one template; identical to
    :func:`ca.crl_entry.crl_entry_der` (checked on a sample) but without a Python call per field."""
    pool = os.urandom(19 * n)
    when = der_time(at)
    head = b"\x30" + bytes([4 + 20 + len(when) + len(REASON_KEY_COMPROMISE) - 2]) + b"\x02\x14\x01"
    entries = [head + pool[i * 19:(i + 1) * 19] + when + REASON_KEY_COMPROMISE for i in range(n)]
    serials = [int.from_bytes(b"\x01" + pool[i * 19:(i + 1) * 19], "big") for i in range(0, n, max(1, n // 100))]
    assert entries[0] == crl_entry_der(serials[0], at, 1)
    return entries, serials


def test_one_million_entry_crl_builds_parses_and_verifies() -> None:
    issuer = software_issuer()
    now = datetime.now(UTC).replace(microsecond=0)
    entries, sample = fast_entries(1_000_000, now)
    started = time.perf_counter()
    der, count = build_crl(issuer, entries, 42, now, now + timedelta(hours=24))
    built = time.perf_counter() - started
    crl = x509.load_der_x509_crl(der)
    assert count == len(crl) == 1_000_000
    assert crl.is_signature_valid(issuer.certificate.public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    for serial in sample[:20]:
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None and entry.revocation_date_utc == now
    print(f"\n1,000,000-entry CRL: built and signed in {built:.3f} s, {len(der) / 1e6:.1f} MB")


def test_entries_from_sqlite_full_then_incremental(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scale.db'}"
    migrate.upgrade(url)
    db = Database(url)
    now = datetime.now(UTC).replace(microsecond=0)
    entries, _ = fast_entries(STORE_ENTRIES, now)
    ts = now.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME text format
    rows = [(e[4:24].hex().lstrip("0"), "scale", "CN=x", "[]", "machine", ts, ts, "revoked", ts, "keyCompromise",
             e, b"x", "", "", ts) for e in entries]
    started = time.perf_counter()
    with db.write() as conn:  # one Core statement, executemany at the driver
        conn.exec_driver_sql(
            "INSERT INTO certificates (serial, issuer_id, subject, sans, profile, not_before, not_after, status, "
            "revoked_at, revocation_reason, crl_entry_der, der, requester, channel, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    inserted = time.perf_counter() - started
    issuer = software_issuer()
    cache = EntryCache(db, "scale", reload_after=3600)
    started = time.perf_counter()
    der, count = build_crl(issuer, cache.current(), 1, now, now + timedelta(hours=1))
    full_load = time.perf_counter() - started
    assert count == STORE_ENTRIES and x509.load_der_x509_crl(der).is_signature_valid(
        issuer.certificate.public_key())  # type: ignore[arg-type]
    # one more revocation arrives through the outbox: the next rebuild reads one row
    serial = int.from_bytes(os.urandom(19), "big") | 1
    with db.write() as conn:
        conn.execute(insert(CERTS), {"serial": format(serial, "x"), "issuer_id": "scale", "subject": "CN=y",
                                     "sans": "[]", "profile": "machine", "not_before": now, "not_after": now,
                                     "status": "revoked", "revoked_at": now, "der": b"y",
                                     "crl_entry_der": crl_entry_der(serial, now, 1), "requester": "", "channel": "",
                                     "created_at": now})
        conn.execute(insert(OUTBOX), {"event_id": "e1", "kind": "revoked", "issuer_id": "scale",
                                      "serial": format(serial, "x"), "payload": "{}", "created_at": now})
        conn.execute(update(CERTS).where(CERTS.c.serial == rows[1][0]).values(status="valid", crl_entry_der=None))
        conn.execute(insert(OUTBOX), {"event_id": "e2", "kind": "unrevoked", "issuer_id": "scale",
                                      "serial": rows[1][0], "payload": "{}", "created_at": now})
    started = time.perf_counter()
    der, count = build_crl(issuer, cache.current(), 2, now, now + timedelta(hours=1))
    incremental = time.perf_counter() - started
    crl = x509.load_der_x509_crl(der)
    assert count == STORE_ENTRIES and crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(int(rows[1][0], 16)) is None
    print(f"\n{STORE_ENTRIES:,} stored entries: insert {inserted:.2f} s, CRL from the store {full_load:.3f} s, "
          f"after one revocation {incremental:.3f} s")
    db.dispose()
