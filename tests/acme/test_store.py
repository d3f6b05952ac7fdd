"""AcmeStore contract on SQLite and PostgreSQL: migrations apply, nonces are single use under
concurrency, a single-use EAB key binds exactly one account, transitions are conditional."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from ca.store import migrate
from ca.store.db import Database
from enrollment.acme.model import Identifier
from enrollment.acme.store import AcmeStore, IntegrityError


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('acme-store') / 'acme.db'}"
        migrate.upgrade(url)
        db = Database(url)
        yield AcmeStore(db)
        db.dispose()
        return
    from tests.postgres import pg_cluster

    with pg_cluster() as cluster:
        url = cluster.url()
        migrate.upgrade(url)
        db = Database(url)
        yield AcmeStore(db)
        db.dispose()


def test_nonce_redeemed_once_under_concurrency(store: AcmeStore) -> None:
    nonces = [store.new_nonce(3600) for _ in range(40)]
    assert len(set(nonces)) == 40
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(store.redeem_nonce, nonces * 3))
    assert sum(results) == 40
    assert not store.redeem_nonce("never-issued")


def test_single_use_eab_binds_one_account(store: AcmeStore) -> None:
    now = datetime.now(UTC)
    kid = "eab-store-" + secrets.token_hex(4)
    store.add_eab_key(kid, secrets.token_bytes(32), "machine", ["*.test"], now + timedelta(hours=1), True, now)

    def bind(i: int) -> bool:
        jwk = {"kty": "EC", "crv": "P-256", "x": f"x{i}", "y": "y"}
        return store.create_account(jwk, f"tp-{kid}-{i}", [], kid, now) is not None

    with ThreadPoolExecutor(6) as pool:
        bound = list(pool.map(bind, range(6)))
    assert sum(bound) == 1
    winner = bound.index(True)
    assert store.eab_key(kid).used_count == 1  # type: ignore[union-attr]
    expired = "eab-exp-" + secrets.token_hex(4)
    store.add_eab_key(expired, b"k" * 32, "machine", ["*"], now - timedelta(seconds=1), False, now - timedelta(1))
    assert store.create_account({"kty": "EC"}, f"tp-{expired}", [], expired, now) is None
    with pytest.raises(IntegrityError):  # one account per key (thumbprint unique)
        store.create_account({"kty": "EC"}, f"tp-{kid}-{winner}", [], None, now)


def test_order_transitions_are_conditional(store: AcmeStore) -> None:
    now = datetime.now(UTC)
    account = store.create_account({"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}, "tp-" + secrets.token_hex(6),
                                   ["mailto:a@example.test"], None, now)
    assert account is not None
    order = store.create_order(account.id, [Identifier("dns", "a.test"), Identifier("ip", "192.0.2.1")], "machine",
                               now + timedelta(hours=1), now + timedelta(hours=1), [["http-01"], ["http-01"]], now,
                               None, None, None)
    authzs = store.authzs(order.authz_ids)
    assert [a.identifier.value for a in authzs] == ["a.test", "192.0.2.1"]
    for authz in authzs:
        challenge = store.challenges(authz.id)[0]
        assert store.start_challenge(challenge.id, authz.id, now)
        assert not store.start_challenge(challenge.id, authz.id, now)
        store.finish_challenge(store.challenge(challenge.id), authz, None, now, {"k": "v"})  # type: ignore[arg-type]
    assert store.order(order.id).status == "ready"  # type: ignore[union-attr]
    assert store.transition_order(order.id, "ready", "processing")
    assert not store.transition_order(order.id, "ready", "processing")
    assert store.transition_order(order.id, "processing", "valid", cert_serial="abc")
    assert store.order_by_serial("abc").id == order.id  # type: ignore[union-attr]
    assert [o.id for o in store.orders_for_account(account.id, 10, 0)] == [order.id]


def test_nonce_guarded_by_a_stale_account_stays_unused(store: AcmeStore) -> None:
    """redeem_nonce(nonce, account) consumes the nonce only while the account still has that key
    and is valid; otherwise nothing changes (the caller re-reads the account and retries)."""
    now = datetime.now(UTC)
    tp = "tp-" + secrets.token_hex(6)
    account = store.create_account({"kty": "EC", "crv": "P-256", "x": tp, "y": "b"}, tp, [], None, now)
    assert account is not None
    nonce = store.new_nonce(3600)
    assert store.change_key(account.id, tp, {"kty": "EC", "crv": "P-256", "x": tp + "2", "y": "b"}, tp + "2")
    assert not store.redeem_nonce(nonce, account)  # the cached key was rolled over
    rolled = store.account(account.id)
    assert rolled is not None and store.redeem_nonce(nonce, rolled)
    second = store.new_nonce(3600)
    store.update_account(account.id, status="deactivated")
    assert not store.redeem_nonce(second, rolled)
    assert store.redeem_nonce(second)  # still there: the guarded DELETE removed nothing
