"""SCEP tables on SQLite and PostgreSQL: a one-time challenge is consumed exactly once under
concurrency (conditional UPDATE, rowcount 1), is bound to its profile and expires; transaction
rows are unique per (transactionID, key) and change status conditionally."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ca.store import migrate
from ca.store.db import Database
from enrollment.scep.repository import ISSUED, ISSUING, PENDING, ScepRepository
from tests.conftest import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) if Path("/usr/lib/postgresql").exists() \
    else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if PG_BIN is None or shutil.which("runuser") is None:
        pytest.fail("PostgreSQL server binaries are not installed: run `make setup`")
    base = Path(tempfile.mkdtemp(prefix="scep-pg-"))  # not under pytest's 0700 tmp: the postgres user needs it
    os.chmod(base, 0o777)
    data, port = base / "data", free_port()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                    f"-k {base} -c listen_addresses='' -p {port} -c fsync=off", "start"], check=True,
                   capture_output=True)
    try:
        subprocess.run(["psql", "-h", str(base), "-p", str(port), "-U", "postgres", "-c", "create database ikepki"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@/ikepki?host={base}&port={port}"
    finally:
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-W", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ScepRepository:
    url = f"sqlite:///{tmp_path_factory.mktemp('scep-sqlite') / 'scep.db'}" if request.param == "sqlite" else \
        request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    return ScepRepository(Database(url))


def test_one_time_challenge_is_consumed_exactly_once(repo: ScepRepository) -> None:
    now = datetime.now(UTC)
    challenge = repo.create_challenge("machine", timedelta(hours=1), "test", now)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: repo.consume_challenge(challenge.secret, "machine", now, f"t{i}"),
                                range(16)))
    assert results.count(True) == 1
    other = repo.create_challenge("gateway", timedelta(hours=1), "test", now)
    assert not repo.consume_challenge(other.secret, "machine", now, "x")  # bound to its profile
    assert not repo.consume_challenge(other.secret, "gateway", now + timedelta(hours=2), "x")  # expired
    assert repo.consume_challenge(other.secret, "gateway", now, "x")


def test_transactions_are_unique_and_change_state_conditionally(repo: ScepRepository) -> None:
    now = datetime.now(UTC)
    tid = f"T-{os.urandom(4).hex()}"
    row = {"transaction_id": tid, "key_sha256": "a" * 64, "profile": "gateway", "subject": "CN=x",
           "csr_der": b"\x30\x00", "signer_der": b"\x30\x00", "cipher": "aes128_cbc", "serial": None,
           "principal": "p", "source": "s", "now": now}
    assert repo.record(status=PENDING, **row)
    assert not repo.record(status=PENDING, **row)
    assert repo.record(status=PENDING, **{**row, "key_sha256": "b" * 64})  # another key: another transaction
    tx = repo.find(tid, "a" * 64)
    assert tx is not None and tx.id in [t.id for t in repo.pending()]
    assert repo.transition(tx.id, PENDING, ISSUING, now)
    assert not repo.transition(tx.id, PENDING, ISSUING, now)
    assert repo.transition(tx.id, ISSUING, ISSUED, now, serial=0xABC)
    assert repo.by_id(tx.id).serial == 0xABC


def test_migration_redacts_stored_challenge_passwords(tmp_path: Path) -> None:
    """scep_0002 (issue 21): rows stored before it kept the challengePassword inside csr_der."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import AttributeOID, NameOID
    from sqlalchemy import create_engine, text

    from ca.csr import load_stored_csr

    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "scep@scep_0001")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.test")]))
           .add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"old-static-secret")
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(Encoding.DER))
    now = datetime.now(UTC)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO scep_transactions (transaction_id, key_sha256, status, profile, subject, csr_der, signer_der,"
            " cipher, principal, source, created_at, updated_at) VALUES ('t1', :k, 'pending', 'machine', 'CN=x',"
            " :c, :s, 'aes', 'p', '', :n, :n)"), {"k": "0" * 64, "c": csr, "s": b"\x30\x00", "n": now})
    migrate.upgrade(url)
    with engine.begin() as conn:
        stored = bytes(conn.execute(text("SELECT csr_der FROM scep_transactions")).scalar_one())
    engine.dispose()
    assert b"old-static-secret" not in stored
    assert load_stored_csr(stored).subject.rfc4514_string() == "CN=old.example.test"
