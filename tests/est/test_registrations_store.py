"""The registration store on its own SQLite and PostgreSQL databases: the conditional-UPDATE claim lets exactly
one of many concurrent users through; release/finalize/claim-timeout semantics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ca.errors import PKIError
from ca.store import migrate
from ca.store.db import Database
from enrollment.est.registrations import DeviceRegistration, RegistrationStore, hash_secret
from tests.postgres import pg_cluster

NOW = datetime(2026, 11, 27, tzinfo=UTC)
TIMEOUT = timedelta(minutes=5)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with pg_cluster() as cluster:
        yield cluster.url()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def migrated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database per backend, migrated by Alembic (all branches, as `ikepki init` does)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('est-store') / 'est.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    return url


@pytest.fixture
def store(migrated: str) -> Iterator[RegistrationStore]:
    db = Database(migrated)
    with db.write() as conn:  # every test starts from empty EST tables
        conn.exec_driver_sql("DELETE FROM est_registrations")
        conn.exec_driver_sql("DELETE FROM est_pending")
    yield RegistrationStore(db)
    db.dispose()


def register(store: RegistrationStore, device: str = "d1", hours: float = 1) -> str:
    (issued,) = store.register([DeviceRegistration(device, "machine", ("DNS:d1.example.test",), None, hours)],
                               NOW, "test", 72)
    return issued.secret


def test_exactly_one_of_many_concurrent_claims_wins(store: RegistrationStore) -> None:
    secret = register(store)
    barrier = threading.Barrier(12)
    wins: list[str] = []

    def claim() -> None:
        barrier.wait()
        got = store.claim("d1", hash_secret(secret), NOW, "t", TIMEOUT)
        if got:
            wins.append(got)

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_release_makes_secret_usable_again_and_finalize_is_final(store: RegistrationStore) -> None:
    secret = register(store)
    claim = store.claim("d1", hash_secret(secret), NOW, "t", TIMEOUT)
    assert claim and store.claim("d1", hash_secret(secret), NOW, "t", TIMEOUT) is None
    store.release("d1", "someone-else")  # only our own claim is released
    assert store.get("d1").used  # type: ignore[union-attr]
    store.release("d1", claim)
    claim = store.claim("d1", hash_secret(secret), NOW, "t", TIMEOUT)
    assert claim
    store.finalize("d1", claim, 0xABC)
    store.release("d1", claim)  # too late: a certificate exists
    reg = store.get("d1")
    assert reg is not None and reg.used and reg.serial == 0xABC
    assert store.claim("d1", hash_secret(secret), NOW + 2 * TIMEOUT, "t", TIMEOUT) is None


def test_stale_claim_without_certificate_can_be_taken_again(store: RegistrationStore) -> None:
    secret = register(store)
    assert store.claim("d1", hash_secret(secret), NOW, "crashed", TIMEOUT)
    assert store.claim("d1", hash_secret(secret), NOW + TIMEOUT / 2, "t", TIMEOUT) is None
    assert store.claim("d1", hash_secret(secret), NOW + TIMEOUT * 2, "t", TIMEOUT)


def test_wrong_secret_and_expiry(store: RegistrationStore) -> None:
    secret = register(store, hours=1)
    assert store.claim("d1", hash_secret(secret + "x"), NOW, "t", TIMEOUT) is None
    assert store.claim("d1", hash_secret(secret), NOW + timedelta(hours=2), "t", TIMEOUT) is None


def test_reregistration_replaces_secret(store: RegistrationStore) -> None:
    old = register(store)
    new = register(store)
    assert store.claim("d1", hash_secret(old), NOW, "t", TIMEOUT) is None
    assert store.claim("d1", hash_secret(new), NOW, "t", TIMEOUT)


@pytest.mark.parametrize("bad", [
    DeviceRegistration("", "machine", ("DNS:x",)),
    DeviceRegistration("a:b", "machine", ("DNS:x",)),
    DeviceRegistration("d", "machine", ()),
    DeviceRegistration("d", "machine", ("URI:http://x",)),
    DeviceRegistration("d", "machine", ("IP:999.1.1.1",)),
    DeviceRegistration("d", "machine", ("DNS:x",), None, 0),
])
def test_invalid_registrations(store: RegistrationStore, bad: DeviceRegistration) -> None:
    with pytest.raises(PKIError):
        store.register([bad], NOW, "t", 72)


def test_pending_lifecycle(store: RegistrationStore) -> None:
    p = store.add_pending("k1", "approval", "pipeline:x", None, "CN=x", ["DNS:x"], b"\x30\x00", NOW)
    assert store.add_pending("k1", "approval", "pipeline:x", None, "CN=x", ["DNS:x"], b"\x30\x00", NOW).id == p.id
    assert not store.take_approved(p.id)
    store.decide(p.id, True, NOW, "op")
    with pytest.raises(PKIError):
        store.decide(p.id, False, NOW, "op")
    assert store.take_approved(p.id) and not store.take_approved(p.id)
    store.finish_pending(p.id, 0x10)
    done = store.pending_for("k1")
    assert done is not None and done.status == "issued" and done.serial == 0x10
