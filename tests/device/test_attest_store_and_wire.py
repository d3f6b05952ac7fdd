"""The credential-challenge store (single use under concurrency, SQLite and PostgreSQL, through the real
Alembic migrations) and the ``/attest`` edge under bad input (hypothesis: no 5xx, nothing stored)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from device_helpers import DevicePki
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ca.store.db import Database
from ca.store.migrate import upgrade
from enrollment.attestation.credential import CredentialChallenge
from enrollment.attestation.device_api import Problem
from enrollment.attestation.routes import AkFinishRequest, AkStartRequest
from enrollment.attestation.store import CHALLENGES, SqlCredentialChallengeRepository
from enrollment.attestation.wire import start_mac
from tests.postgres import pg_cluster


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('attest-db') / 'x.db'}"
        upgrade(url)
        yield Database(url)
        return
    with pg_cluster() as pg:
        upgrade(pg.url())
        database = Database(pg.url())
        yield database
        database.dispose()


def _challenge(ttl: timedelta = timedelta(minutes=5)) -> CredentialChallenge:
    now = datetime.now(UTC)
    return CredentialChallenge(f"c-{now.timestamp()}-{threading.get_ident()}-{id(object())}", b"ek", b"ak",
                               b"\x00\x0b" + b"n" * 32, b"s" * 32, now, now + ttl)


def test_challenge_round_trip_and_single_use(db: Database) -> None:
    repo = SqlCredentialChallengeRepository(db, "eab-kid")
    challenge = _challenge()
    repo.add(challenge)
    assert repo.get(challenge.id) == challenge
    assert repo.principal_of(challenge.id) == "eab-kid"
    assert repo.get("unknown") is None and repo.get("x" * 65) is None
    assert repo.consume(challenge.id, datetime.now(UTC)) is True
    assert repo.consume(challenge.id, datetime.now(UTC)) is False
    assert repo.consume("unknown", datetime.now(UTC)) is False


def test_concurrent_consume_admits_exactly_one(db: Database) -> None:
    repo = SqlCredentialChallengeRepository(db)
    challenge = _challenge()
    repo.add(challenge)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        results.append(repo.consume(challenge.id, datetime.now(UTC)))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)
b64ish = st.one_of(st.text(max_size=60), st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode()))
eab_values = json_values | st.fixed_dictionaries({"kid": st.text(max_size=70), "mac": b64ish})
start_bodies = st.fixed_dictionaries({}, optional={"ekCertificate": b64ish | json_values,
                                                   "akPublic": b64ish | json_values, "eab": eab_values})


@given(start_bodies)
def test_start_request_parser_only_raises_client_problems(body: dict) -> None:
    try:
        AkStartRequest.parse(body)
    except Problem as problem:
        assert problem.status < 500


@given(st.dictionaries(st.sampled_from(["challengeId", "secret", "x"]), b64ish | json_values))
def test_finish_request_parser_only_raises_client_problems(body: dict) -> None:
    try:
        AkFinishRequest.parse(body)
    except Problem as problem:
        assert problem.status < 500


def _rows(pki: DevicePki) -> int:
    with Database(f"sqlite:///{Path(pki.dir) / 'ikepki.db'}").read() as conn:
        return int(conn.execute(select(func.count()).select_from(CHALLENGES)).scalar_one())


def test_attest_edge_refuses_bad_requests(pki: DevicePki) -> None:
    before = _rows(pki)
    eab = pki.eab()
    with httpx.Client(verify=pki.tls(), timeout=30) as http:
        def post(path: str, body: bytes, ctype: str = "application/json") -> httpx.Response:
            return http.post(f"{pki.attest}{path}", content=body, headers={"Content-Type": ctype})

        cases = [
            (post("/v1/ak/start", b"{}", "text/plain"), 415, "malformed"),
            (post("/v1/ak/start", b"not json"), 400, "malformed"),
            (post("/v1/ak/start", b"[1]"), 400, "malformed"),
            (post("/v1/ak/start", b"{" + b" " * 40000 + b"}"), 413, "malformed"),
            (post("/v1/ak/start", json.dumps({"ekCertificate": "AAAA", "akPublic": "AAAA"}).encode()), 403,
             "unauthorized"),
            (post("/v1/ak/start", json.dumps({"ekCertificate": "AAAA", "akPublic": "AAAA",
                                              "eab": {"kid": eab.kid, "mac": "AAAA"}}).encode()), 403,
             "unauthorized"),
            (post("/v1/ak/start", json.dumps({"ekCertificate": "AAAA", "akPublic": "AAAA",
                                              "eab": {"kid": eab.kid, "mac": start_mac(eab.key_bytes, "AAAA",
                                                                                       "AAAA")}}).encode()), 400,
             "badAttestationStatement"),
            (post("/v1/ak/finish", json.dumps({"challengeId": "nope", "secret": "AAAA"}).encode()), 400,
             "badAttestationStatement"),
            (post("/v1/ak/finish", json.dumps({"challengeId": "", "secret": "AAAA"}).encode()), 400, "malformed"),
        ]
        for resp, status, problem in cases:
            assert resp.status_code == status, resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert resp.json()["type"] == f"urn:ietf:params:acme:error:{problem}"
        assert http.get(f"{pki.attest}/v1/ak/start").status_code == 405
    assert _rows(pki) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start_bodies)
def test_attest_edge_fuzz_no_5xx_nothing_stored(pki: DevicePki, body: dict) -> None:
    before = _rows(pki)
    with httpx.Client(verify=pki.tls(), timeout=30) as http:
        resp = http.post(f"{pki.attest}/v1/ak/start", json=body)
    assert 400 <= resp.status_code < 500, resp.text
    assert _rows(pki) == before
