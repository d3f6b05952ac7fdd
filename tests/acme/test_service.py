"""In-process checks of the state machines (RFC 8555 §7.1.6) with a settable clock: expiry of
orders and authorizations, deactivation, and the challenge plug-in interface (the one
device-attest-01 will use) driving pending → processing → valid with evidence."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from acme_helpers import Eab, b64u, eab_binding, jws
from cryptography.hazmat.primitives.asymmetric import ec

from ca.clock import FixedClock
from enrollment.acme.challenges import ChallengeRegistry, ValidationResult
from enrollment.acme.model import Account, Authz, Challenge
from enrollment.acme.service import AcmeService, RequestContext, Response, ari_cert_id
from enrollment.acme.settings import AcmeSettings

BASE = "https://acme.test/acme"


class ClockedDeployment:
    """The session deployment with a settable clock for the ACME service."""

    def __init__(self, dep: Any, clock: FixedClock) -> None:
        self._dep, self.clock = dep, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dep, name)


class EchoValidator:
    """A plug-in validator: succeeds when the client posts {"proof": "ok"}, records evidence."""

    type = "test-echo-01"
    identifier_types = frozenset({"dns"})
    seen: list[dict[str, Any]] = []

    def applies(self, authz: Authz) -> bool:
        return True

    def validate(self, challenge: Challenge, authz: Authz, account: Account,
                 payload: dict[str, Any]) -> ValidationResult:
        self.seen.append(payload)
        if payload.get("proof") == "ok":
            return ValidationResult.success({"device_id": f"dev-{authz.identifier.value}"})
        return ValidationResult.failure("incorrectResponse", "wrong proof")


class Client:
    def __init__(self, service: AcmeService) -> None:
        self.service = service
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid: str | None = None
        self.nonce = service.handle(RequestContext("HEAD", "/new-nonce", BASE, "127.0.0.1")).headers["Replay-Nonce"]

    def post(self, url: str, payload: Any, **kw: Any) -> Response:
        body = jws(self.key, url, payload, nonce=self.nonce, kid=kw.pop("kid", self.kid), **kw)
        resp = self.service.handle(RequestContext("POST", url[len(BASE):], BASE, "127.0.0.1",
                                                  "application/jose+json", json.dumps(body).encode()))
        self.nonce = resp.headers["Replay-Nonce"]
        return resp


@pytest.fixture
def setup(deployment: Any, request: pytest.FixtureRequest) -> tuple[AcmeService, FixedClock, Client]:
    clock = FixedClock(datetime.now(UTC))
    limit = getattr(request, "param", 0)
    settings = AcmeSettings(order_lifetime_seconds=600, authz_lifetime_seconds=300, rate_limit_per_account=limit,
                            validation_queue_per_account=2,
                            rate_limit_window_seconds=3600)
    registry = ChallengeRegistry()
    registry.register(EchoValidator())
    service = AcmeService(ClockedDeployment(deployment, clock), settings, registry)
    import secrets
    kid, key = "eab-svc-" + secrets.token_urlsafe(6), secrets.token_bytes(32)
    service.store.add_eab_key(kid, key, "machine", ["*.svc.test"], None, False, clock.now())
    client = Client(service)
    url = f"{BASE}/new-account"
    resp = client.post(url, {"termsOfServiceAgreed": True,
                             "externalAccountBinding": eab_binding(Eab(kid, b64u(key)), client.key, url)}, kid=None)
    assert resp.status == 201, resp.body
    client.kid = resp.headers["Location"]
    return service, clock, client


def new_order(client: Client, *names: str) -> tuple[str, dict[str, Any]]:
    resp = client.post(f"{BASE}/new-order", {"identifiers": [{"type": "dns", "value": n} for n in names]})
    assert resp.status == 201, resp.body
    return resp.headers["Location"], resp.body


def test_order_and_authorization_expire(setup: tuple[AcmeService, FixedClock, Client]) -> None:
    _, clock, client = setup
    order_url, order = new_order(client, "exp.svc.test")
    authz_url = order["authorizations"][0]
    clock.advance(timedelta(seconds=301))
    authz = client.post(authz_url, None).body
    assert authz["status"] == "expired"
    challenge_url = authz["challenges"][0]["url"]
    assert client.post(challenge_url, {"proof": "ok"}).status == 400  # cannot answer an expired authz
    clock.advance(timedelta(seconds=300))
    assert client.post(order_url, None).body["status"] == "invalid"
    resp = client.post(order["finalize"], {"csr": "AA"})
    assert resp.status == 403 and resp.body["type"].endswith("orderNotReady")


def test_plugin_validator_state_machine_and_evidence(setup: tuple[AcmeService, FixedClock, Client]) -> None:
    service, _, client = setup
    order_url, order = new_order(client, "good.svc.test", "bad.svc.test")
    good, bad = (client.post(u, None).body for u in order["authorizations"])
    assert [c["type"] for c in good["challenges"]] == ["test-echo-01"]
    first = client.post(good["challenges"][0]["url"], {"proof": "ok"})
    assert first.body["status"] in ("processing", "valid")
    assert any('rel="up"' in link for link in first.links)
    for _ in range(200):
        if client.post(order["authorizations"][0], None).body["status"] != "pending":
            break
        time.sleep(0.02)
    assert client.post(order["authorizations"][0], None).body["status"] == "valid"
    assert client.post(order_url, None).body["status"] == "pending"  # one authorization left
    authz_id = order["authorizations"][0].rsplit("/", 1)[1]
    assert service.store.authz(authz_id).evidence == {"device_id": "dev-good.svc.test"}  # type: ignore[union-attr]

    client.post(bad["challenges"][0]["url"], {"proof": "nope"})
    for _ in range(200):
        if client.post(order_url, None).body["status"] != "pending":
            break
        time.sleep(0.02)
    final = client.post(order_url, None).body
    assert final["status"] == "invalid" and final["error"]["type"].endswith("incorrectResponse")
    assert client.post(order["authorizations"][1], None).body["challenges"][0]["status"] == "invalid"


def test_deactivated_authorization_invalidates_order(setup: tuple[AcmeService, FixedClock, Client]) -> None:
    _, _, client = setup
    order_url, order = new_order(client, "deact.svc.test")
    resp = client.post(order["authorizations"][0], {"status": "deactivated"})
    assert resp.body["status"] == "deactivated"
    assert client.post(order_url, None).body["status"] == "invalid"


def test_ari_cert_id_matches_rfc9773_example() -> None:
    """RFC 9773 §4.1 example: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
    serial 00:87:65:43:21 -> aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = ec.generate_private_key(ec.SECP256R1())
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    name = x509.Name([])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x87654321).not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2026, 1, 1, tzinfo=UTC))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(key, hashes.SHA256()))
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize("setup", [10], indirect=True)
def test_rate_limit_per_account(setup: tuple[AcmeService, FixedClock, Client]) -> None:
    _, _, client = setup
    responses = [client.post(client.kid or "", None) for _ in range(12)]
    limited = [r for r in responses if r.status == 429]
    assert limited and limited[0].body["type"].endswith("rateLimited")
    assert int(limited[0].headers["Retry-After"]) > 0 and limited[0].headers["Replay-Nonce"]


def test_rate_limit_per_source_address_covers_nonces(deployment: Any) -> None:
    settings = AcmeSettings(rate_limit_per_ip=5, rate_limit_window_seconds=3600)
    service = AcmeService(deployment, settings, ChallengeRegistry())
    statuses = [service.handle(RequestContext("HEAD", "/new-nonce", BASE, "192.0.2.7")).status for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]
    assert service.handle(RequestContext("HEAD", "/new-nonce", BASE, "192.0.2.8")).status == 200


def test_validation_lost_by_a_dead_replica_is_reaped(setup: tuple[AcmeService, FixedClock, Client]) -> None:
    """A challenge left processing (its replica died before recording the outcome) becomes invalid."""
    service, clock, client = setup
    order_url, order = new_order(client, "lost.svc.test")
    authz = client.post(order["authorizations"][0], None).body
    challenge_id = authz["challenges"][0]["url"].rsplit("/", 1)[1]
    authz_id = order["authorizations"][0].rsplit("/", 1)[1]
    assert service.store.start_challenge(challenge_id, authz_id, clock.now())  # as if a replica had started it
    assert client.post(order["authorizations"][0], None).body["challenges"][0]["status"] == "processing"
    clock.advance(service.stale_after() + timedelta(seconds=1))
    reaped = client.post(order["authorizations"][0], None).body
    assert reaped["status"] == "invalid" and reaped["challenges"][0]["status"] == "invalid"
    assert client.post(order_url, None).body["status"] == "invalid"


def _validated_order(client: Client, name: str) -> tuple[str, dict[str, Any]]:
    order_url, order = new_order(client, name)
    authz = client.post(order["authorizations"][0], None).body
    client.post(authz["challenges"][0]["url"], {"proof": "ok"})
    for _ in range(200):
        if client.post(order_url, None).body["status"] == "ready":
            break
        time.sleep(0.02)
    return order_url, client.post(order_url, None).body


def test_finalize_drops_requested_role_attributes(setup: tuple[AcmeService, FixedClock, Client]) -> None:
    """Issue 21 defect 1: finalize with ``OU=vpn-admin,serialNumber=dev2`` got exactly that subject.
    The subject now carries only the commonName equal to the authorized identifier."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    _, _, client = setup
    _, order = _validated_order(client, "role.svc.test")
    assert order["status"] == "ready"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "role.svc.test"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "vpn-admin"),
                         x509.NameAttribute(NameOID.SERIAL_NUMBER, "dev2")])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("role.svc.test")]), critical=False)
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(Encoding.DER))
    resp = client.post(order["finalize"], {"csr": b64u(csr)})
    assert resp.status == 200, resp.body
    pem = client.post(resp.body["certificate"], None).body
    cert = x509.load_pem_x509_certificates(pem if isinstance(pem, bytes) else pem.encode())[0]
    assert cert.subject.rfc4514_string() == "CN=role.svc.test"


@pytest.mark.parametrize("curve,old_refused", [(ec.SECP384R1, "badSignatureAlgorithm"),  # the JWK's alg differs
                                               (ec.SECP256R1, "malformed")])  # same alg: the signature fails
def test_cached_account_follows_key_rollover_and_deactivation_in_another_worker(
        setup: tuple[AcmeService, FixedClock, Client], curve: type[ec.EllipticCurve], old_refused: str) -> None:
    """Two workers (two services over one database) each cache the account. A key rollover
    (§7.3.5) and a deactivation (§7.3.6) done through one are seen by the other at once: the old
    key is refused there, the new key accepted, and after deactivation nothing is."""
    from acme_helpers import jwk_of

    service_a, _, client = setup
    service_b = AcmeService(service_a.dep, service_a.settings, service_a.registry)
    on_b = Client(service_b)
    on_b.key, on_b.kid = client.key, client.kid
    first = on_b.post(f"{BASE}/new-order", {"identifiers": [{"type": "dns", "value": "b.svc.test"}]})
    assert first.status == 201, first.body  # B now holds the account in its cache
    assert service_b.accounts.get((client.kid or "").rsplit("/", 1)[1]) is not None
    old_key, new_key = client.key, ec.generate_private_key(curve())
    url = f"{BASE}/key-change"
    inner = jws(new_key, url, {"account": client.kid, "oldKey": jwk_of(old_key)}, nonce=None)
    resp = client.post(url, inner)
    assert resp.status == 200, resp.body
    refused = on_b.post(f"{BASE}/new-order", {"identifiers": [{"type": "dns", "value": "old.svc.test"}]})
    assert refused.status == 400 and refused.body["type"].endswith(old_refused), refused.body
    on_b.key = new_key
    resp = on_b.post(f"{BASE}/new-order", {"identifiers": [{"type": "dns", "value": "roll.svc.test"}]})
    assert resp.status == 201, resp.body
    client.key = new_key
    assert client.post(client.kid or "", {"status": "deactivated"}).body["status"] == "deactivated"
    gone = on_b.post(f"{BASE}/new-order", {"identifiers": [{"type": "dns", "value": "late.svc.test"}]})
    assert gone.status == 403 and gone.body["type"].endswith("unauthorized"), gone.body
    assert "deactivated" in gone.body["detail"]
