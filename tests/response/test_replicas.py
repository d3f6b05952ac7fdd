"""Multi-replica safety of the guard and the replay memory, on SQLite and on PostgreSQL: two
engines (two "replicas") race from many threads; the database decides."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ca.store import migrate
from ca.store.db import Database
from response.store import Budget, ResponseStore
from tests.postgres import pg_cluster

NOW = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        u = f"sqlite:///{tmp_path_factory.mktemp('resp-replicas') / 'db.sqlite'}"
        migrate.upgrade(u)
        yield u
        return
    with pg_cluster() as pg:
        u = pg.createdb("response_replicas")
        migrate.upgrade(u)
        yield u


def _race(fn, n: int) -> list:  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(n)
    out: list = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        value = fn(i)
        with lock:
            out.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_guard_budget_is_not_overspent_by_racing_replicas(url: str) -> None:
    replicas = [ResponseStore(Database(url)), ResponseStore(Database(url))]
    rule = f"race-{url[:6]}"
    budget = [Budget(f"rule {rule}", 100, 3, timedelta(hours=1), rule)]

    def reserve(i: int) -> str:
        inc = replicas[i % 2].reserve(NOW, {"source": "am", "format": "alertmanager", "fingerprint": f"f{i}",
                                            "rule": rule, "action": "hold", "target_kind": "device",
                                            "target_value": f"dev-{i}", "serials": [f"{i + 1:x}"],
                                            "devices": [], "cert_count": 1, "device_count": 1}, budget)
        return inc.status

    statuses = _race(reserve, 12)
    assert sorted(statuses) == ["executing"] * 3 + ["pending"] * 9, statuses


def test_a_message_id_is_accepted_once_across_replicas(url: str) -> None:
    replicas = [ResponseStore(Database(url)), ResponseStore(Database(url))]
    accepted = _race(lambda i: replicas[i % 2].remember_message("soar", "msg_same", NOW, timedelta(minutes=11)), 8)
    assert accepted.count(True) == 1, accepted
    # pruned only after the keep period: then the timestamp check refuses it anyway
    assert replicas[0].remember_message("soar", "msg_same", NOW + timedelta(minutes=5), timedelta(minutes=11)) is False
    assert replicas[1].remember_message("soar", "msg_same", NOW + timedelta(minutes=12), timedelta(minutes=11)) is True




def test_a_message_that_could_not_be_handled_is_forgotten(url: str) -> None:
    store = ResponseStore(Database(url))
    assert store.remember_message("soar", "msg_retry", NOW, timedelta(minutes=11)) is True
    store.forget_message("soar", "msg_retry")  # handling failed: the sender's retry must get through
    assert store.remember_message("soar", "msg_retry", NOW, timedelta(minutes=11)) is True
    assert store.remember_message("soar", "msg_retry", NOW, timedelta(minutes=11)) is False
