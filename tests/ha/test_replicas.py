"""Several `ikepki serve` replicas on one PostgreSQL database agree: ACME nonces, serials,
one-time secrets, CRL numbers, push deliveries, OCSP answers, and nothing is lost when a
replica is SIGKILLed mid-load.

Two deployment directories share the CA material (the second is a copy of the first, SoftHSM
token included) and one database; each replica runs its background workers (CRL publisher,
OCSP refresher, push) as `ikepki serve` does by default.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import josepy as jose
import pytest
from acme import challenges, client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from tests.acme.acme_helpers import Eab, Http01Responder, eab_binding, jws
from tests.conftest import Server, free_port, start_server
from tests.ha.deployments import EST_PASSWORD, EST_PIPELINE, HaBase, copy_deployment
from tests.ha.ha_helpers import (
    BarrierHttp01Responder,
    CountingWebhook,
    RoundRobinAdapter,
    Store,
    admin,
    create_eab,
    csr_der,
    est_cert,
    est_client,
    est_enroll,
    est_post,
    ocsp_post,
    ocsp_request,
    revoke,
    wait_for,
)

PIPELINE = (EST_PIPELINE, EST_PASSWORD)


@dataclass
class Replicas:
    a: Server
    b: Server
    url: str
    store: Store
    hook: CountingWebhook
    http01_port: int
    issuer: x509.Certificate  # the "ec" issuing CA

    @property
    def both(self) -> tuple[Server, Server]:
        return self.a, self.b


def _start_both(dirs: list[Path], env: dict[str, str]) -> list[Server]:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start_server, d, env) for d in dirs]
        errors = [f.exception() for f in futures]
        started = [f.result() for f in futures if f.exception() is None]
    if any(errors):
        for srv in started:
            srv.stop()
        raise next(e for e in errors if e)
    return started


@pytest.fixture(scope="module")
def replicas(ha_base: HaBase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    base = tmp_path_factory.mktemp("replicas")
    dir_a, url = ha_base.clone("ha_replicas", base / "a")
    dir_b = copy_deployment(dir_a, base / "b", url)
    store = Store(url)
    hook = CountingWebhook(free_port())
    from ca.store.db import Database
    from ca.store.sql import SqlCertificateStore

    db = Database(url)
    SqlCertificateStore(db).add_gateway("ha-webhook", "webhook", hook.url, datetime.datetime.now(datetime.UTC))
    db.dispose()
    http01 = free_port()
    env = {"IKEPKI_DATABASE_URL": url, "IKEPKI_LOG_LEVEL": "INFO", "IKEPKI_ACME_HTTP01_PORT": str(http01),
           "IKEPKI_ACME_TLSALPN01_PORT": str(free_port()), "IKEPKI_ACME_VALIDATION_HOSTS": "*.test=127.0.0.1",
           "IKEPKI_ACME_VALIDATION_TIMEOUT": "5",
           # test_acme_order_ready_when_its_challenges_finish_at_once holds 8 validations of one
           # account at once; the default per-account concurrency (2) would queue 6 of them
           "IKEPKI_ACME_VALIDATION_PER_ACCOUNT": "8"}
    a, b = _start_both([dir_a, dir_b], env)
    issuer = x509.load_pem_x509_certificate((dir_a / "ca" / "ec.pem").read_bytes())
    try:
        yield Replicas(a, b, url, store, hook, http01, issuer)
    finally:
        a.stop()
        b.stop()
        hook.close()
        store.close()


def _issue(server: Server, cn: str) -> x509.Certificate:
    with est_client(server) as c:
        return est_cert(est_enroll(c, server, cn, PIPELINE))


# -- ACME nonces ------------------------------------------------------------------------------------

def test_acme_nonce_from_one_replica_is_redeemed_once_on_the_other(replicas: Replicas) -> None:
    """RFC 8555 §6.5: a nonce from A is good on B, and only once (replaying it on A is badNonce)."""
    a, b = replicas.both
    eab = _eab(replicas)
    key = ec.generate_private_key(ec.SECP256R1())
    with a.client() as ca_, b.client() as cb:
        new_account_b = cb.get(f"{b.https_url}/acme/directory").json()["newAccount"]
        nonce = ca_.head(ca_.get(f"{a.https_url}/acme/directory").json()["newNonce"]).headers["Replay-Nonce"]
        payload = {"termsOfServiceAgreed": True, "externalAccountBinding": eab_binding(eab, key, new_account_b)}
        r = cb.post(new_account_b, content=json.dumps(jws(key, new_account_b, payload, nonce=nonce)).encode(),
                    headers={"Content-Type": "application/jose+json"})
        assert r.status_code == 201, r.text
        new_account_a = ca_.get(f"{a.https_url}/acme/directory").json()["newAccount"]
        replay = {"onlyReturnExisting": True}
        r = ca_.post(new_account_a, content=json.dumps(jws(key, new_account_a, replay, nonce=nonce)).encode(),
                     headers={"Content-Type": "application/jose+json"})
        assert r.status_code == 400 and r.json()["type"] == "urn:ietf:params:acme:error:badNonce", r.text


def _eab(replicas: Replicas) -> Eab:
    return Eab(*create_eab(replicas.url))


def _balanced_client(replicas: Replicas) -> tuple[client.ClientV2, RoundRobinAdapter]:
    """An EAB-registered ClientV2 whose every request goes to the other replica than the last one."""
    a, b = replicas.both
    eab = _eab(replicas)
    balancer = RoundRobinAdapter(a.https_port, [a.https_port, b.https_port])
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=str(a.root_pem),  # type: ignore[arg-type]
                               user_agent="ikepki-ha-tests")
    net.session.mount("https://", balancer)
    cl = client.ClientV2(client.ClientV2.get_directory(f"{a.https_url}/acme/directory", net), net)
    binding = messages.ExternalAccountBinding.from_data(account_public_key=key.public_key(), kid=eab.kid,
                                                        hmac_key=eab.hmac_key, directory=cl.directory)
    net.account = cl.new_account(messages.NewRegistration.from_data(
        email="ha@example.test", terms_of_service_agreed=True, external_account_binding=binding))
    return cl, balancer


def _obtain(cl: client.ClientV2, responder: Http01Responder, *names: str) -> x509.Certificate:
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    order = cl.new_order(csr)
    with responder:
        for authz in order.authorizations:
            challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            _response, validation = challb.response_and_validation(cl.net.key)
            responder.tokens[challb.chall.encode("token")] = validation
        for authz in order.authorizations:
            challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            cl.answer_challenge(challb, challb.response(cl.net.key))
        done = cl.poll_and_finalize(order, datetime.datetime.now() + datetime.timedelta(seconds=90))
    return x509.load_pem_x509_certificate(done.fullchain_pem.encode())


def test_acme_same_order_finalized_on_both_replicas_at_once_issues_once(replicas: Replicas) -> None:
    """§7.4: two finalize requests for one ready order, one to each replica at the same moment:
    one certificate; the other request gets orderNotReady (or the order already processing/valid),
    and both clients end up downloading the same certificate."""
    a, b = replicas.both
    cl, _ = _balanced_client(replicas)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("ha-final.test")]), critical=False)
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    order = cl.new_order(csr)
    with Http01Responder(replicas.http01_port) as responder:
        for authz in order.authorizations:
            challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            response, validation = challb.response_and_validation(cl.net.key)
            responder.tokens[challb.chall.encode("token")] = validation
            cl.answer_challenge(challb, response)
        order = cl.poll_authorizations(order, datetime.datetime.now() + datetime.timedelta(seconds=60))
    clients = []
    for port in (a.https_port, b.https_port):  # same account, one client pinned to each replica
        net = client.ClientNetwork(cl.net.key, alg=jose.ES256, account=cl.net.account,
                                   verify_ssl=str(a.root_pem),  # type: ignore[arg-type]
                                   user_agent="ikepki-ha-tests")
        net.session.mount("https://", RoundRobinAdapter(a.https_port, [port]))
        clients.append(client.ClientV2(cl.directory, net))
    barrier = threading.Barrier(2)

    def finalize(c: client.ClientV2) -> str:
        barrier.wait()
        try:
            done = c.finalize_order(order, datetime.datetime.now() + datetime.timedelta(seconds=60))
        except messages.Error as exc:
            assert exc.typ in ("urn:ietf:params:acme:error:orderNotReady",), exc
            for _ in range(120):  # the winner's issuance completes; the loser reads the order
                body = messages.Order.from_json(c._post_as_get(order.uri).json())
                if body.status == messages.STATUS_VALID:
                    return str(c._post_as_get(body.certificate).text)
                time.sleep(0.5)
            raise AssertionError("order never became valid") from exc
        return str(done.fullchain_pem)

    with ThreadPoolExecutor(2) as pool:
        chains = list(pool.map(finalize, clients))
    leaves = {x509.load_pem_x509_certificate(c.encode()).serial_number for c in chains}
    assert len(leaves) == 1
    rows = replicas.store.rows("select serial from certificates where sans like '%ha-final.test%'")
    assert [int(r.serial, 16) for r in rows] == list(leaves)


def test_acme_library_through_a_round_robin_balancer(replicas: Replicas) -> None:
    """certbot's ClientV2 behind an L4 round-robin over both replicas: every request lands on the
    other replica than the previous one, so every nonce is redeemed where it was not issued."""
    a, b = replicas.both
    cl, balancer = _balanced_client(replicas)
    leaf = _obtain(cl, Http01Responder(replicas.http01_port), "ha-lb.test")
    assert "urn:ietf:params:acme:error:badNonce" not in balancer.problems, balancer.problems
    assert balancer.served[a.https_port] >= 3 and balancer.served[b.https_port] >= 3, balancer.served
    assert balancer.cross_redeemed >= 4, balancer.cross_redeemed
    assert replicas.store.certificates([leaf.serial_number])[leaf.serial_number][1] == \
        leaf.public_bytes(serialization.Encoding.DER)


def test_acme_order_ready_when_its_challenges_finish_at_once(replicas: Replicas) -> None:
    """An order for 8 names: the http-01 responder holds every validation request until all 8 have
    arrived, so both replicas finish the authorizations concurrently (RFC 8555 §7.1.6: the order
    becomes ready when all are valid, whoever finishes last)."""
    cl, balancer = _balanced_client(replicas)
    names = [f"ha-multi-{i}.test" for i in range(8)]
    leaf = _obtain(cl, BarrierHttp01Responder(replicas.http01_port, len(names)), *names)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(names)
    assert "urn:ietf:params:acme:error:orderNotReady" not in balancer.problems, balancer.problems


def test_acme_last_of_two_concurrent_validations_makes_the_order_ready(replicas: Replicas) -> None:
    """The ACME store on PostgreSQL, deterministically: two validations of one 2-name order finish
    at the same time (each paused after it marked its authorization valid and read the siblings'
    statuses, before commit), as two replicas' validation workers do. Under READ COMMITTED each
    would see the other still pending, and the order would stay pending with every authorization
    valid (§7.1.6): finishers of one order must be serialised."""
    from sqlalchemy import event
    from sqlalchemy.sql import Select

    from ca.store.db import Database
    from enrollment.acme.model import Identifier
    from enrollment.acme.store import AUTHZS, AcmeStore

    db = Database(replicas.url)
    barrier = threading.Barrier(2, timeout=3)

    def pause(conn: object, clause: object, *args: object) -> None:
        if isinstance(clause, Select) and AUTHZS in clause.get_final_froms():
            with contextlib.suppress(threading.BrokenBarrierError):  # serialised by a lock: nobody to wait for
                barrier.wait()

    try:
        store = AcmeStore(db)
        now = datetime.datetime.now(datetime.UTC)
        account = store.create_account({"kty": "EC"}, f"tp-{now.timestamp()}", [], None, now)
        assert account is not None
        later = now + datetime.timedelta(hours=1)
        order = store.create_order(account.id, [Identifier("dns", "a.ha.test"), Identifier("dns", "b.ha.test")],
                                   "machine", later, later, [["http-01"], ["http-01"]], now, None, None, None)
        work = []
        for authz in store.authzs(order.authz_ids):
            (challenge,) = store.challenges(authz.id)
            assert store.start_challenge(challenge.id, authz.id)
            work.append((store.challenge(challenge.id), authz))
        event.listen(db.write_engine, "after_execute", pause)
        try:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda w: store.finish_challenge(w[0], w[1], None, now), work))
        finally:
            event.remove(db.write_engine, "after_execute", pause)
        assert [a.status for a in store.authzs(order.authz_ids)] == ["valid", "valid"]
        assert store.order(order.id).status == "ready"  # type: ignore[union-attr]
    finally:
        db.dispose()


# -- serials ----------------------------------------------------------------------------------------

def test_serials_unique_under_concurrent_issuance(replicas: Replicas) -> None:
    per_thread, threads = 10, 6  # 3 client threads per replica
    servers = [replicas.a, replicas.b] * (threads // 2)

    def load(i: int) -> list[x509.Certificate]:
        srv = servers[i]
        with est_client(srv) as c:
            return [est_cert(est_enroll(c, srv, f"serial-{i}-{n}", PIPELINE)) for n in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        certs = [cert for batch in pool.map(load, range(threads)) for cert in batch]
    serials = [c.serial_number for c in certs]
    assert len(serials) == per_thread * threads == len(set(serials))
    stored = replicas.store.certificates(serials)
    assert {s: d for s, (_, d) in stored.items()} == \
        {c.serial_number: c.public_bytes(serialization.Encoding.DER) for c in certs}


# -- one-time secrets -------------------------------------------------------------------------------

def test_est_registration_secret_consumed_once_across_replicas(replicas: Replicas) -> None:
    a, b = replicas.both
    devices = [f"ha-race-{i}" for i in range(6)]
    r = admin(a, "POST", "/est/registrations", json={"devices": [
        {"device_id": d, "profile": "machine", "sans": [f"DNS:{d}.example.test"]} for d in devices]})
    assert r.status_code == 201, r.text
    secrets = {x["device_id"]: x["secret"] for x in r.json()["registrations"]}
    for device in devices:
        barrier = threading.Barrier(2)
        clients = [est_client(a), est_client(b)]
        for c, srv in zip(clients, (a, b), strict=True):  # connect first so that both requests really race
            c.get(f"{srv.https_url}/.well-known/est/cacerts")

        def go(i: int, device: str = device, clients: list[httpx.Client] = clients,
               barrier: threading.Barrier = barrier) -> httpx.Response:
            barrier.wait()
            return est_enroll(clients[i], (a, b)[i], device, (device, secrets[device]))

        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(go, range(2)))
        for c in clients:
            c.close()
        assert sorted(x.status_code for x in responses) == [200, 403], (device, [x.text for x in responses])
        winner = next(x for x in responses if x.status_code == 200)
        serial = est_cert(winner).serial_number
        (row,) = replicas.store.rows("select used, serial from est_registrations where device_id = :d", d=device)
        assert row.used and int(row.serial, 16) == serial
    rows = replicas.store.rows("select count(*) as n from certificates where device_id in :d", d=devices)
    assert rows[0].n == len(devices)


def _race(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Run the calls at the same moment (one thread each, released together)."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def test_est_manual_approval_issues_once_across_replicas(replicas: Replicas) -> None:
    """RFC 7030 §4.2.3 with an operator in the loop: the same request lands on both replicas, both
    replicas' admins approve at once, the client polls both at once: one pending row, one approval,
    one certificate, and every later poll on either replica returns that certificate."""
    a, b = replicas.both
    csr = csr_der("ha-approval")
    clients = {id(a): est_client(a), id(b): est_client(b)}

    def post(srv: Server) -> Callable[[], httpx.Response]:
        return lambda: est_post(clients[id(srv)], srv, csr, PIPELINE, label="approval")

    try:
        first = _race(post(a), post(b))
        assert [r.status_code for r in first] == [202, 202], [r.text for r in first]
        rows = replicas.store.rows("select id, status from est_pending where subject like '%ha-approval%'")
        assert len(rows) == 1 and rows[0].status == "pending"
        pending_id = rows[0].id
        decisions = _race(lambda: admin(a, "POST", f"/est/pending/{pending_id}/approve"),
                          lambda: admin(b, "POST", f"/est/pending/{pending_id}/approve"))
        assert sorted(r.status_code for r in decisions) == [200, 409], [r.text for r in decisions]
        polls = _race(post(a), post(b))
        assert {r.status_code for r in polls} <= {200, 202} and 200 in {r.status_code for r in polls}
        serials = {est_cert(r).serial_number for r in polls if r.status_code == 200}
        for srv in (a, b):  # later polls, on either replica, return the one certificate
            serials.add(est_cert(post(srv)()).serial_number)
        assert len(serials) == 1
        (row,) = replicas.store.rows("select status, serial from est_pending where id = :i", i=pending_id)
        assert row.status == "issued" and int(row.serial, 16) in serials
        count = replicas.store.rows(
            "select count(*) as n from certificates where sans like '%ha-approval.example.test%'")
        assert count[0].n == 1
    finally:
        for c in clients.values():
            c.close()


def test_scep_one_time_challenges_consumed_once_on_postgres(replicas: Replicas) -> None:
    """SCEP's repository on PostgreSQL: 8 connections race for each challenge, exactly one wins."""
    from ca.store.db import Database
    from enrollment.scep.repository import ScepRepository

    db = Database(replicas.url)
    try:
        repo = ScepRepository(db)
        now = datetime.datetime.now(datetime.UTC)
        challenges_ = [repo.create_challenge("machine", datetime.timedelta(minutes=5), "ha-test", now)
                       for _ in range(5)]
        for ch in challenges_:
            barrier = threading.Barrier(8)

            def take(i: int, secret: str = ch.secret, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait()
                return repo.consume_challenge(secret, "machine", now, f"tx-{i}")

            with ThreadPoolExecutor(8) as pool:
                assert sorted(pool.map(take, range(8))) == [False] * 7 + [True]
    finally:
        db.dispose()


# -- CRL publisher ----------------------------------------------------------------------------------

def test_one_crl_publisher_and_increasing_numbers(replicas: Replicas) -> None:
    a, b = replicas.both
    certs = [_issue(srv, f"crl-{i}") for i, srv in enumerate((a, b, a, b))]
    for cert, srv in zip(certs, (a, b, b, a), strict=True):
        assert revoke(srv, cert.serial_number).status_code == 200

    def both_list_all() -> bool:
        for srv in (a, b):
            r = httpx.get(f"{srv.http_url}/crl/ec.crl", timeout=10)
            if r.status_code != 200:
                return False
            listed = {e.serial_number for e in x509.load_der_x509_crl(r.content)}
            if not {c.serial_number for c in certs} <= listed:
                return False
        return True

    wait_for(both_list_all, "both replicas to serve a CRL listing the revocations", timeout=90)
    rows = replicas.store.rows("select issuer_id, crl_number from ocsp_crl_publications order by id")
    by_issuer: dict[str, list[int]] = {}
    for r in rows:
        by_issuer.setdefault(r.issuer_id, []).append(int(r.crl_number))
    for issuer_id, numbers in by_issuer.items():
        assert numbers == sorted(set(numbers)), (issuer_id, numbers)  # strictly increasing in commit order
    (lease,) = replicas.store.rows("select holder from ocsp_leases where name = 'crl-publisher'")
    pids = {int(lease.holder.split(":")[1])}
    assert pids <= {a.process.pid, b.process.pid}
    logs = {srv.process.pid: srv.log.read_text(errors="replace") for srv in (a, b)}
    assert not any("already taken" in text for text in logs.values()), "two publishers raced for a CRL number"
    # once publications settle, both serve the newest row of the shared table, byte for byte
    wait_for(lambda: len({httpx.get(f"{srv.http_url}/crl/ec.crl", timeout=10).content for srv in (a, b)}) == 1,
             "both replicas to serve the same CRL", timeout=60)


# -- push -------------------------------------------------------------------------------------------

def test_revocation_delivered_once_per_gateway_with_two_push_workers(replicas: Replicas) -> None:
    a, b = replicas.both
    certs = [_issue(srv, f"push-{i}") for i, srv in enumerate((a, b) * 4)]
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda x: revoke((a, b)[x[0] % 2], x[1].serial_number).status_code,
                              enumerate(certs)))
    assert codes == [200] * len(certs)
    serials = [format(c.serial_number, "x") for c in certs]
    events = {r.event_id for r in replicas.store.rows(
        "select event_id from outbox_events where serial in :s", s=serials)}
    assert len(events) == len(certs)

    def all_delivered() -> bool:
        rows = replicas.store.rows("select status from deliveries where event_id in :e", e=events)
        return len(rows) == len(events) and all(r.status == "delivered" for r in rows)

    wait_for(all_delivered, "every delivery row to be marked delivered", timeout=60)
    counts = replicas.hook.snapshot()
    assert {e: counts[e] for e in events} == dict.fromkeys(events, 1)


# -- OCSP -------------------------------------------------------------------------------------------

def test_ocsp_answers_identical_across_replicas(replicas: Replicas) -> None:
    a, b = replicas.both
    good, bad = _issue(a, "ocsp-good"), _issue(b, "ocsp-revoked")
    assert revoke(a, bad.serial_number, "superseded").status_code == 200
    requests_ = {"good": ocsp_request(good, replicas.issuer), "revoked": ocsp_request(bad, replicas.issuer)}

    def agree() -> dict[str, list[ocsp.OCSPResponse]] | None:
        answers = {k: [ocsp_post(srv.http_url, req) for srv in (a, b)] for k, req in requests_.items()}
        if any(r.certificate_status != ocsp.OCSPCertStatus.REVOKED for r in answers["revoked"]):
            return None  # a replica has not polled the revocation feed yet
        return answers

    answers = wait_for(agree, "both replicas to report the revocation", timeout=60)
    bucket = datetime.timedelta(seconds=60)  # ocsp.bucket_seconds (default)
    for kind, (ra, rb) in answers.items():
        assert ra.response_status == rb.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert (ra.certificate_status, ra.revocation_time_utc, ra.revocation_reason, ra.serial_number,
                ra.responder_key_hash, ra.certificates[0].serial_number) == \
            (rb.certificate_status, rb.revocation_time_utc, rb.revocation_reason, rb.serial_number,
             rb.responder_key_hash, rb.certificates[0].serial_number), kind
        if ra.this_update_utc == rb.this_update_utc:
            # ResponseData byte for byte (status, times, producedAt, responderID, extensions); only the
            # signatures may differ (ECDSA is randomised)
            assert ra.tbs_response_bytes == rb.tbs_response_bytes, kind
            assert ra.next_update_utc == rb.next_update_utc
        else:  # each replica pre-signed on its own and a thisUpdate bucket boundary fell in between
            assert abs(ra.this_update_utc - rb.this_update_utc) <= bucket, kind
    ra = answers["revoked"][0]
    assert ra.revocation_reason == x509.ReasonFlags.superseded
    assert answers["good"][0].certificate_status == ocsp.OCSPCertStatus.GOOD


# -- revocations committed out of id order --------------------------------------------------------------

def test_revocation_committed_after_a_later_one_reaches_every_replica(replicas: Replicas) -> None:
    """PostgreSQL hands out outbox ids at INSERT but shows rows at COMMIT, so a slow revocation (X,
    id N) can become visible after a quick one (Y, id N+1) that the replicas' feeds have already
    passed. The slow writer is the core's own store in this process, paused right after its outbox
    INSERT (as a replica busy with a large batch would be); Y goes through replica B's admin API."""
    from sqlalchemy import event
    from sqlalchemy.sql.dml import Insert

    from ca.model import RevocationReason
    from ca.store.db import Database
    from ca.store.sql import OUTBOX, SqlCertificateStore

    a, b = replicas.both
    x, y = _issue(a, "gap-slow"), _issue(b, "gap-fast")
    req_x, req_y = ocsp_request(x, replicas.issuer), ocsp_request(y, replicas.issuer)
    for srv in (a, b):  # both replicas now hold pre-signed "good" answers for X and Y
        for req in (req_x, req_y):
            assert ocsp_post(srv.http_url, req).certificate_status == ocsp.OCSPCertStatus.GOOD
    ski = replicas.issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    db = Database(replicas.url)
    inserted, release = threading.Event(), threading.Event()

    def pause(conn: object, clause: object, *args: object) -> None:
        if isinstance(clause, Insert) and clause.table is OUTBOX:
            inserted.set()
            release.wait(120)

    event.listen(db.write_engine, "after_execute", pause)
    slow = ThreadPoolExecutor(1)
    try:
        revoked_x = slow.submit(SqlCertificateStore(db).revoke, [x.serial_number], RevocationReason.keyCompromise,
                                datetime.datetime.now(datetime.UTC), "ha-test", "admin", "127.0.0.1", None,
                                lambda _issuer_id: (replicas.issuer.subject.rfc4514_string(), ski))
        assert inserted.wait(60)
        assert revoke(b, y.serial_number).status_code == 200
        # Y revoked on both replicas: their feeds have read id N+1 (the cached "good" is gone)
        wait_for(lambda: all(ocsp_post(srv.http_url, req_y).certificate_status == ocsp.OCSPCertStatus.REVOKED
                             for srv in (a, b)), "both replicas to see the quick revocation", timeout=30)
    finally:
        release.set()
        assert [i.serial for i in revoked_x.result(60)] == [x.serial_number]
        slow.shutdown()
        db.dispose()
    wait_for(lambda: all(ocsp_post(srv.http_url, req_x).certificate_status == ocsp.OCSPCertStatus.REVOKED
                         for srv in (a, b)), "both replicas' OCSP to see the revocation committed late", timeout=60)

    def crl_lists_x() -> bool:
        return all(x.serial_number in {e.serial_number for e in x509.load_der_x509_crl(
            httpx.get(f"{srv.http_url}/crl/ec.crl", timeout=10).content)} for srv in (a, b))

    wait_for(crl_lists_x, "the CRL to list the revocation committed late", timeout=60)


# -- SIGKILL mid-load (last: it kills replica A) ------------------------------------------------------

def test_sigkill_mid_load_loses_no_certificate_and_no_revocation(replicas: Replicas) -> None:
    a, b = replicas.both
    received: list[x509.Certificate] = []
    acknowledged: list[int] = []
    revoke_queue = [_issue(b, f"kill-rev-{i}") for i in range(12)]
    lock = threading.Lock()
    stop = threading.Event()
    killed = threading.Event()

    def issue_loop(srv: Server, tag: str) -> None:
        with est_client(srv) as c:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = est_enroll(c, srv, f"kill-{tag}-{n}", PIPELINE)
                except httpx.HTTPError:
                    if srv is a and killed.is_set():
                        return
                    raise
                if r.status_code == 200:
                    with lock:
                        received.append(est_cert(r))

    def revoke_loop() -> None:
        for i, cert in enumerate(revoke_queue):
            srv = a if i % 2 == 0 else b
            try:
                r = revoke(srv, cert.serial_number)
            except httpx.HTTPError:
                if srv is a and killed.is_set():
                    continue
                raise
            if r.status_code == 200:
                with lock:
                    acknowledged.append(cert.serial_number)

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(issue_loop, a, "a1"), pool.submit(issue_loop, a, "a2"),
                   pool.submit(issue_loop, b, "b1"), pool.submit(issue_loop, b, "b2")]
        wait_for(lambda: len(received) >= 8, "some issuance on both replicas", timeout=120, interval=0.05)
        rev = pool.submit(revoke_loop)
        wait_for(lambda: len(acknowledged) >= 4, "the first revocations", timeout=60, interval=0.02)
        killed.set()
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        rev.result(timeout=120)
        count_at_kill = len(received)
        wait_for(lambda: len(received) >= count_at_kill + 6, "issuance to continue on B", timeout=120)
        stop.set()
        for f in futures:
            f.result(timeout=120)
    # every certificate a client received is in the store, byte for byte
    stored = replicas.store.certificates([c.serial_number for c in received])
    assert {s: d for s, (_, d) in stored.items()} == \
        {c.serial_number: c.public_bytes(serialization.Encoding.DER) for c in received}
    # every acknowledged revocation is in the store, in the outbox, and reaches the gateway via B
    assert len(acknowledged) >= 6
    statuses = replicas.store.certificates(acknowledged)
    assert {s: st for s, (st, _) in statuses.items()} == dict.fromkeys(acknowledged, "revoked")
    serials = [format(s, "x") for s in acknowledged]
    events = {r.event_id for r in replicas.store.rows(
        "select event_id from outbox_events where serial in :s", s=serials)}
    assert len(events) == len(acknowledged)
    wait_for(lambda: all(replicas.hook.snapshot()[e] >= 1 for e in events),
             "replica B's push worker to deliver every acknowledged revocation", timeout=60)
    for serial in acknowledged[:3]:
        request = ocsp_request(next(c for c in revoke_queue if c.serial_number == serial), replicas.issuer)

        def revoked_on_b(request: bytes = request) -> bool:
            return ocsp_post(b.http_url, request).certificate_status == ocsp.OCSPCertStatus.REVOKED

        wait_for(revoked_on_b, "B's OCSP to report the revocation", timeout=30)
