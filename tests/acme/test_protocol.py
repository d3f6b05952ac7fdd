"""Protocol-level checks with hand-built JWS: RFC 8555 §6 request rules, problem types, EAB, CSR
checks, headers on every response; bad input never changes state."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator

import pytest
from acme_helpers import (
    AcmeServer,
    Http01Responder,
    RawClient,
    b64u,
    eab_binding,
    jws,
    problem_type,
    thumbprint,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


@pytest.fixture
def raw(acme: AcmeServer) -> Iterator[RawClient]:
    client = RawClient(acme)
    assert client.register(acme.eab()).status_code == 201
    yield client
    client.http.close()


def counts(acme: AcmeServer) -> tuple[int, int, int]:
    with sqlite3.connect(acme.dir / "ikepki.db") as db:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                     for t in ("acme_accounts", "acme_orders", "certificates"))


def csr_der(*names: str, key: object = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER)


def ready_order(acme: AcmeServer, raw: RawClient, *names: str) -> dict:
    resp = raw.post(raw.dir["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]})
    assert resp.status_code == 201, resp.text
    order_url = resp.headers["Location"]
    with Http01Responder(acme.http01_port) as responder:
        for authz_url in resp.json()["authorizations"]:
            authz = raw.post(authz_url, None).json()
            ch = next(c for c in authz["challenges"] if c["type"] == "http-01")
            responder.tokens[ch["token"]] = f"{ch['token']}.{thumbprint(json.loads(json.dumps(jwk_of_raw(raw))))}"
            assert raw.post(ch["url"], {}).status_code == 200
            for _ in range(100):
                status = raw.post(authz_url, None).json()["status"]
                if status != "pending":
                    break
            assert status == "valid"
    order = raw.post(order_url, None).json()
    assert order["status"] == "ready"
    order["url"] = order_url
    return order


def jwk_of_raw(raw: RawClient) -> dict:
    from acme_helpers import jwk_of
    return jwk_of(raw.key)


# -- every response: Replay-Nonce and Link rel=index ------------------------------------------------

def test_headers_on_every_response(acme: AcmeServer) -> None:
    with acme.client() as http:
        for method, path in (("GET", "/directory"), ("HEAD", "/new-nonce"), ("GET", "/new-nonce"),
                             ("GET", "/nowhere"), ("GET", "/new-order"), ("POST", "/new-order")):
            resp = http.request(method, acme.base + path)
            assert resp.headers.get("Replay-Nonce"), (method, path)
            assert f'<{acme.directory}>;rel="index"' in resp.headers.get("Link", ""), (method, path)
        assert http.get(acme.base + "/new-order").status_code == 405
        assert http.get(acme.base + "/new-nonce").status_code == 204
        assert http.head(acme.base + "/new-nonce").headers["Cache-Control"] == "no-store"
        resp = http.post(acme.base + "/new-order", content=b"{}", headers={"Content-Type": "application/json"})
        assert resp.status_code == 415 and problem_type(resp) == "malformed"
        meta = http.get(acme.directory).json()["meta"]
        assert meta["externalAccountRequired"] is True and set(meta["profiles"]) == {"machine", "gateway", "user"}


# -- §6.2-6.5 request authentication ----------------------------------------------------------------

def test_replayed_nonce_is_rejected_and_client_recovers(acme: AcmeServer, raw: RawClient) -> None:
    url = raw.dir["newOrder"]
    nonce = raw.nonce()
    body = jws(raw.key, url, {"identifiers": [{"type": "dns", "value": "replay.test"}]}, nonce=nonce, kid=raw.kid)
    first = raw.post(url, None, body=body)
    assert first.status_code == 201
    before = counts(acme)
    replay = raw.post(url, None, body=body)
    assert replay.status_code == 400 and problem_type(replay) == "badNonce"
    assert counts(acme) == before
    retry = raw.post(url, {"identifiers": [{"type": "dns", "value": "replay.test"}]},
                     nonce=replay.headers["Replay-Nonce"])
    assert retry.status_code == 201


def test_wrong_url_unknown_kid_tampered_signature(acme: AcmeServer, raw: RawClient) -> None:
    before = counts(acme)
    payload = {"identifiers": [{"type": "dns", "value": "bad.test"}]}
    resp = raw.post(raw.dir["newOrder"], payload, body=jws(raw.key, raw.dir["newAccount"], payload,
                                                           nonce=raw.nonce(), kid=raw.kid))
    assert resp.status_code == 403 and problem_type(resp) == "unauthorized"
    resp = raw.post(raw.dir["newOrder"], payload, kid=acme.base + "/acct/doesnotexist")
    assert problem_type(resp) == "accountDoesNotExist"
    body = jws(raw.key, raw.dir["newOrder"], payload, nonce=raw.nonce(), kid=raw.kid)
    other = jws(raw.key, raw.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "other.test"}]},
                nonce=raw.nonce(), kid=raw.kid)
    body["payload"] = other["payload"]
    resp = raw.post(raw.dir["newOrder"], None, body=body)
    assert resp.status_code == 400 and problem_type(resp) == "malformed"
    resp = raw.post(raw.dir["newOrder"], payload, extra={"jwk": jwk_of_raw(raw)})  # kid and jwk
    assert problem_type(resp) == "malformed"
    assert counts(acme) == before


def test_oversized_and_malformed_bodies(acme: AcmeServer, raw: RawClient) -> None:
    before = counts(acme)
    resp = raw.post(raw.dir["newOrder"], {"identifiers": [], "pad": "x" * 70_000})
    assert resp.status_code == 413 and problem_type(resp) == "malformed" and resp.headers["Replay-Nonce"]
    for body in (b"{not json", b"[]", b'{"protected":"e30","payload":"","signature":"","header":{}}',
                 b'{"protected":"!!","payload":"","signature":""}',
                 b'{"protected":"e30=","payload":"","signature":""}'):
        resp = raw.post(raw.dir["newOrder"], None, body=body)
        assert resp.status_code == 400 and problem_type(resp) == "malformed", body
    assert counts(acme) == before


@pytest.mark.parametrize("alg", ["none", "HS256", "RS384", "ES512", "PS256"])
def test_unsupported_algorithms(acme: AcmeServer, raw: RawClient, alg: str) -> None:
    resp = raw.post(raw.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "a.test"}]}, alg=alg)
    assert resp.status_code == 400 and problem_type(resp) == "badSignatureAlgorithm"
    assert set(resp.json()["algorithms"]) == {"ES256", "ES384", "RS256", "EdDSA"}


@pytest.mark.parametrize("make_key", [lambda: ec.generate_private_key(ec.SECP384R1()),
                                      lambda: rsa.generate_private_key(65537, 2048),
                                      ed25519.Ed25519PrivateKey.generate])
def test_account_key_types(acme: AcmeServer, make_key: object) -> None:
    client = RawClient(acme, make_key())  # type: ignore[operator]
    resp = client.register(acme.eab())
    assert resp.status_code == 201, resp.text
    assert client.post(client.kid or "", None).json()["status"] == "valid"
    again = client.post(client.dir["newAccount"], {"onlyReturnExisting": True}, kid=None)
    assert again.status_code == 200 and again.headers["Location"] == client.kid
    client.http.close()


# -- External Account Binding (§7.3.4) --------------------------------------------------------------

def test_eab_required_wrong_mac_and_single_use(acme: AcmeServer) -> None:
    before = counts(acme)
    client = RawClient(acme)
    url = client.dir["newAccount"]
    resp = client.register(None)
    assert problem_type(resp) == "externalAccountRequired"
    eab = acme.eab(single_use=True)
    bad = {"termsOfServiceAgreed": True, "externalAccountBinding": eab_binding(eab, client.key, url, b"wrong" * 8)}
    resp = client.post(url, bad, kid=None)
    assert resp.status_code == 403 and problem_type(resp) == "unauthorized"
    other_key = ec.generate_private_key(ec.SECP256R1())
    mismatched = {"termsOfServiceAgreed": True, "externalAccountBinding": eab_binding(eab, other_key, url)}
    assert problem_type(client.post(url, mismatched, kid=None)) == "unauthorized"
    unknown = type(eab)("eab-unknown", eab.hmac_key)
    assert problem_type(client.register(unknown)) == "unauthorized"
    assert counts(acme) == before
    assert client.register(eab).status_code == 201
    second = RawClient(acme)
    resp = second.register(eab)
    assert resp.status_code == 403 and problem_type(resp) == "unauthorized"
    client.http.close()
    second.http.close()


def test_eab_cli_creates_usable_keys(acme: AcmeServer) -> None:
    eab = acme.eab_cli("gateway", "*.cli.test,10.0.0.0/8", "--single-use", "--expires", "1h")
    assert eab.kid.startswith("eab-") and len(base64.urlsafe_b64decode(eab.hmac_key + "==")) == 32
    client = RawClient(acme)
    assert client.register(eab).status_code == 201
    resp = client.post(client.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "x.other.test"}]})
    assert problem_type(resp) == "rejectedIdentifier" and resp.json()["subproblems"]
    resp = client.post(client.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "gw.cli.test"},
                                                                {"type": "ip", "value": "10.1.2.3"}]})
    assert resp.status_code == 201 and resp.json()["profile"] == "gateway"
    client.http.close()


# -- orders, finalize, CSR checks -------------------------------------------------------------------

def test_finalize_rules(acme: AcmeServer, raw: RawClient) -> None:
    resp = raw.post(raw.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "early.test"}]})
    early = raw.post(resp.json()["finalize"], {"csr": b64u(csr_der("early.test"))})
    assert early.status_code == 403 and problem_type(early) == "orderNotReady"

    order = ready_order(acme, raw, "fin.test")
    before = counts(acme)
    for bad in (csr_der("fin.test", "extra.test"), csr_der("other.test")):
        resp = raw.post(order["finalize"], {"csr": b64u(bad)})
        assert resp.status_code == 400 and problem_type(resp) == "badCSR"
    resp = raw.post(order["finalize"], {"csr": b64u(csr_der("fin.test", key=raw.key))})
    assert problem_type(resp) == "badCSR"  # the account key must not be certified (§11.1)
    resp = raw.post(order["finalize"], {"csr": "!!notbase64"})
    assert problem_type(resp) == "malformed"
    assert counts(acme) == before
    assert raw.post(order["url"], None).json()["status"] == "ready"

    done = raw.post(order["finalize"], {"csr": b64u(csr_der("fin.test"))})
    assert done.status_code == 200 and done.json()["status"] == "valid"
    cert = raw.post(done.json()["certificate"], None)
    assert cert.headers["content-type"] == "application/pem-certificate-chain"
    assert cert.text.count("BEGIN CERTIFICATE") == 2
    assert problem_type(raw.post(order["finalize"], {"csr": b64u(csr_der("fin.test"))})) == "orderNotReady"
    orders = raw.post(raw.kid + "/orders", None).json()["orders"]  # type: ignore[operator]
    assert order["url"] in orders


def test_other_accounts_cannot_read_or_revoke(acme: AcmeServer, raw: RawClient) -> None:
    order = ready_order(acme, raw, "mine.test")
    done = raw.post(order["finalize"], {"csr": b64u(csr_der("mine.test"))}).json()
    intruder = RawClient(acme)
    intruder.register(acme.eab())
    for url in (order["url"], done["certificate"], order["authorizations"][0], raw.kid):
        assert problem_type(intruder.post(url, None)) == "unauthorized", url
    pem = raw.post(done["certificate"], None).text
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    resp = intruder.post(intruder.dir["revokeCert"], {"certificate": b64u(der)})
    assert problem_type(resp) == "unauthorized"
    resp = raw.post(raw.dir["revokeCert"], {"certificate": b64u(der), "reason": 6})
    assert problem_type(resp) == "badRevocationReason"
    assert raw.post(raw.dir["revokeCert"], {"certificate": b64u(der), "reason": 5}).status_code == 200
    intruder.http.close()


def test_unsupported_and_rejected_identifiers(acme: AcmeServer, raw: RawClient) -> None:
    before = counts(acme)
    for ident, expected in (({"type": "email", "value": "a@b.test"}, "unsupportedIdentifier"),
                            ({"type": "dns", "value": "*.wild.test"}, "rejectedIdentifier"),
                            ({"type": "dns", "value": "bad..test"}, "rejectedIdentifier"),
                            ({"type": "dns", "value": "outside.example"}, "rejectedIdentifier")):
        resp = raw.post(raw.dir["newOrder"], {"identifiers": [ident]})
        assert problem_type(resp) == expected, ident
    resp = raw.post(raw.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "p.test"}], "profile": "nope"})
    assert problem_type(resp) == "invalidProfile"
    assert counts(acme) == before


def test_renewal_info_and_replaces(acme: AcmeServer, raw: RawClient) -> None:
    """RFC 9773: GET renewalInfo/<AKI.serial> (Retry-After), and newOrder ``replaces`` checks."""
    from enrollment.acme.service import ari_cert_id

    order = ready_order(acme, raw, "ari.test")
    done = raw.post(order["finalize"], {"csr": b64u(csr_der("ari.test"))}).json()
    cert = x509.load_pem_x509_certificate(raw.post(done["certificate"], None).content)
    cert_id = ari_cert_id(cert)
    info = raw.http.get(f"{raw.dir['renewalInfo']}/{cert_id}")
    assert info.status_code == 200 and int(info.headers["Retry-After"]) > 0
    window = info.json()["suggestedWindow"]
    assert window["start"] < window["end"]
    assert raw.http.get(f"{raw.dir['renewalInfo']}/AAAA.AQ").status_code == 404
    assert problem_type(raw.http.get(f"{raw.dir['renewalInfo']}/not-an-id")) == "malformed"

    ident = {"identifiers": [{"type": "dns", "value": "ari.test"}]}
    resp = raw.post(raw.dir["newOrder"], {**ident, "replaces": cert_id})
    assert resp.status_code == 201 and resp.json()["replaces"] == cert_id
    other = RawClient(acme)
    other.register(acme.eab())
    assert problem_type(other.post(other.dir["newOrder"], {**ident, "replaces": cert_id})) == "malformed"
    other.http.close()
