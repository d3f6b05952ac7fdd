"""Issue 21 defect 9: one ACME account pointing many http-01 validations at a black hole (a
listener on 127.0.0.2 that accepts and never answers) must neither stall another account's
validation nor queue without bound.

Before the fix all validations shared one unbounded FIFO in front of 8 threads: the second
account's validation waited until the black-holed ones had timed out. Now one account runs at
most ``validation_per_account`` at once, waits at most ``validation_queue_per_account`` (beyond:
rateLimited + Retry-After), and accounts are served round-robin. Checked by state, not timing:
the second account's authorization is valid while most of the first account's are still pending."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from acme_helpers import (
    AcmeServer,
    Http01Responder,
    RawClient,
    acme_env,
    jwk_of,
    problem_type,
    stop_quickly,
    thumbprint,
)

from tests.conftest import free_port, start_server

HOLE = "127.0.0.2"
PER_ACCOUNT, QUEUE = 2, 16  # the defaults
FLOOD = 24


class BlackHole:
    """Accepts TCP connections on (HOLE, port) and never answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server((HOLE, port), backlog=256)
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def acme_hole(deployment_dir: Any) -> Iterator[tuple[AcmeServer, BlackHole]]:
    http01, tlsalpn = free_port(), free_port()
    hole = BlackHole(http01)
    env = acme_env(http01, tlsalpn, IKEPKI_ACME_VALIDATION_HOSTS=f"*.hole.test={HOLE},*.test=127.0.0.1",
                   IKEPKI_ACME_VALIDATION_TIMEOUT="3")
    srv = start_server(deployment_dir, env=env, extra_args=("--no-workers",))
    try:
        yield AcmeServer(srv, http01, tlsalpn), hole
    finally:
        stop_quickly(srv)
        hole.close()


def _challenges(raw: RawClient, names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    resp = raw.post(raw.dir["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]})
    assert resp.status_code == 201, resp.text
    out = []
    for authz_url in resp.json()["authorizations"]:
        authz = raw.post(authz_url, None).json()
        out.append((authz_url, next(c for c in authz["challenges"] if c["type"] == "http-01")))
    return out


def test_black_holed_account_does_not_stall_others(acme_hole: tuple[AcmeServer, BlackHole]) -> None:
    acme, _ = acme_hole
    flooder, other = RawClient(acme), RawClient(acme)
    assert flooder.register(acme.eab()).status_code == 201
    assert other.register(acme.eab()).status_code == 201

    flood = _challenges(flooder, [f"a{i}.hole.test" for i in range(FLOOD)])
    answers = [flooder.post(ch["url"], {}) for _, ch in flood]
    accepted = [url for (url, _), a in zip(flood, answers, strict=True) if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]

    [(authz_url, ch)] = _challenges(other, ["b.good.test"])
    with Http01Responder(acme.http01_port) as responder:
        responder.tokens[ch["token"]] = f"{ch['token']}.{thumbprint(json.loads(json.dumps(jwk_of(other.key))))}"
        assert other.post(ch["url"], {}).status_code == 200
        status = "pending"
        deadline = time.monotonic() + 60
        while status == "pending" and time.monotonic() < deadline:
            status = other.post(authz_url, None).json()["status"]
            time.sleep(0.1)
    assert status == "valid"
    still_pending = sum(flooder.post(url, None).json()["status"] == "pending" for url in accepted)
    assert still_pending >= len(accepted) - 2 * PER_ACCOUNT, \
        f"the other account was validated only after {len(accepted) - still_pending} black-holed validations"
    assert len(accepted) == PER_ACCOUNT + QUEUE, [a.status_code for a in answers]
    assert all(a.status_code == 429 and problem_type(a) == "rateLimited" and a.headers.get("retry-after")
               for a in refused)


def test_queue_round_robin_caps_and_bounds() -> None:
    """The queue's rules with real threads: per-account concurrency, bounded waiting, round-robin."""
    from enrollment.acme.validation_queue import FairValidationQueue

    q = FairValidationQueue(workers=2, per_account=1, per_account_queue=3, max_queue=5)
    gate = threading.Event()
    order: list[str] = []
    lock = threading.Lock()

    def job(name: str, block: bool = False) -> Any:
        def run() -> None:
            if block:
                gate.wait(10)
            with lock:
                order.append(name)
        return run

    try:
        assert q.submit("a", job("a0", block=True))  # runs at once (worker 1), holds a's only slot
        deadline = time.monotonic() + 5
        while q.pending("a") != (1, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(q.submit("a", job(f"a{i}")) for i in (1, 2, 3))
        assert not q.submit("a", job("a4"))  # a's queue is full
        assert q.submit("b", job("b0", block=True))  # b0 on worker 2
        deadline = time.monotonic() + 5
        while q.pending("b") != (1, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert q.pending("b") == (1, 0)
        assert q.submit("b", job("b1")) and q.submit("c", job("c0"))  # 5 waiting in total
        assert not q.submit("d", job("d0"))  # full
        assert q.pending("a") == (1, 3) and q.pending("b") == (1, 1)
        gate.set()
        deadline = time.monotonic() + 5
        while len(order) < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(order) == ["a0", "a1", "a2", "a3", "b0", "b1", "c0"]
    finally:
        q.close()


def test_queue_serves_accounts_round_robin() -> None:
    """One worker, so the order is the queue's alone (no thread scheduling): while a0 runs, a queues
    three jobs and b two; then each account's next job waits behind one job of the other, never
    behind all of a's backlog."""
    from enrollment.acme.validation_queue import FairValidationQueue

    q = FairValidationQueue(workers=1, per_account=1, per_account_queue=3, max_queue=5)
    gate = threading.Event()
    order: list[str] = []

    def job(name: str, block: bool = False) -> Any:
        def run() -> None:
            if block:
                gate.wait(10)
            order.append(name)  # one worker: no concurrent appends
        return run

    try:
        assert q.submit("a", job("a0", block=True))
        deadline = time.monotonic() + 5
        while q.pending("a") != (1, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(q.submit("a", job(f"a{i}")) for i in (1, 2, 3))
        assert q.submit("b", job("b0")) and q.submit("b", job("b1"))
        gate.set()
        deadline = time.monotonic() + 5
        while len(order) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert order == ["a0", "a1", "b0", "a2", "b1", "a3"]
    finally:
        q.close()
