"""The ``acme`` library (certbot's ClientV2) against ikepki: EAB account, order, http-01 served by the
test, finalize, download, key rollover, renewal info (RFC 9773), revoke, orders list, deactivation."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import josepy as jose
import pytest
from acme import challenges, client, errors, messages
from acme import jws as acme_jws
from acme_helpers import AcmeServer, Http01Responder, verify_certificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

pytestmark = pytest.mark.interop
_OPEN: list[client.ClientNetwork] = []


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    """Close keep-alive connections so the server shuts down at once (TLS close_notify waits otherwise)."""
    yield
    while _OPEN:
        _OPEN.pop().session.close()


def make_client(acme: AcmeServer, key: jose.JWK, alg: jose.JWASignature = jose.ES256) -> client.ClientV2:
    net = client.ClientNetwork(key, alg=alg, verify_ssl=str(acme.root_pem), user_agent="ikepki-tests")
    _OPEN.append(net)
    return client.ClientV2(client.ClientV2.get_directory(acme.directory, net), net)


def register(acme: AcmeServer, cl: client.ClientV2, key: jose.JWK, profile: str = "machine",
             identifiers: str = "*.test") -> messages.RegistrationResource:
    eab = acme.eab(profile, identifiers)
    binding = messages.ExternalAccountBinding.from_data(account_public_key=key.public_key(), kid=eab.kid,
                                                        hmac_key=eab.hmac_key, directory=cl.directory)
    regr = cl.new_account(messages.NewRegistration.from_data(email="lib@example.test", terms_of_service_agreed=True,
                                                             external_account_binding=binding))
    cl.net.account = regr
    return regr


def csr_for(*names: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM), key


def obtain(acme: AcmeServer, cl: client.ClientV2, *names: str, profile: str | None = None,
           cert_key: ec.EllipticCurvePrivateKey | None = None) -> messages.OrderResource:
    csr_pem, _ = csr_for(*names)
    if cert_key is not None:
        csr_pem = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                   .sign(cert_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    order = cl.new_order(csr_pem, profile=profile)
    with Http01Responder(acme.http01_port) as responder:
        for authz in order.authorizations:
            challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            response, validation = challb.response_and_validation(cl.net.key)
            responder.tokens[challb.chall.encode("token")] = validation
            cl.answer_challenge(challb, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
        return cl.poll_and_finalize(order, deadline)


def rollover(cl: client.ClientV2, regr: messages.RegistrationResource, new_key: jose.JWK) -> None:
    """RFC 8555 §7.3.5 with the library's JWS and network layer (ClientV2 has no helper for it)."""
    url = cl.directory["keyChange"]
    inner_payload = json.dumps({"account": regr.uri, "oldKey": cl.net.key.public_key().to_partial_json()}).encode()
    inner = acme_jws.JWS.sign(inner_payload, key=new_key, alg=jose.ES384, nonce=None, url=url)
    cl.net.post(url, inner)
    cl.net.key, cl.net.alg = new_key, jose.ES384


def test_acme_library_full_lifecycle(acme: AcmeServer, tmp_path: Path) -> None:
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    cl = make_client(acme, key)
    assert cl.external_account_required()
    assert set(cl.directory.meta.profiles) == {"machine", "gateway", "user"}
    regr = register(acme, cl, key)
    assert regr.body.status == "valid"

    order = obtain(acme, cl, "lib1.test", "lib2.test")
    assert order.body.status == messages.STATUS_VALID and order.body.profile == "machine"
    cert = verify_certificate(order.fullchain_pem.encode(), acme, tmp_path, {"lib1.test", "lib2.test"})

    # RFC 9773 renewal info through the library: the window lies in the final third of the lifetime
    when, _ = cl.renewal_time(order.fullchain_pem.encode())
    assert when is not None
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert cert.not_valid_before_utc + lifetime / 2 < when < cert.not_valid_after_utc

    # key rollover, then the account keeps working with the new key only
    new_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP384R1()))
    rollover(cl, regr, new_key)
    regr = cl.query_registration(regr)
    assert regr.body.key == new_key.public_key()
    old_client = make_client(acme, key)
    with pytest.raises(errors.Error) as excinfo:  # the old key no longer names an account
        old_client.new_account(messages.NewRegistration.from_data(only_return_existing=True))
    assert getattr(excinfo.value, "code", None) == "accountDoesNotExist"

    # revoke with the rolled-over account key; renewal window moves to now
    cl.revoke(cert, 4)
    when, _ = cl.renewal_time(order.fullchain_pem.encode())
    assert when is not None and when <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=2)
    with pytest.raises(errors.Error) as excinfo:
        cl.revoke(cert, 4)
    assert excinfo.value.code == "alreadyRevoked"

    # orders list, then deactivation: the account can do nothing afterwards
    orders = cl._post_as_get(f"{regr.uri}/orders").json()["orders"]
    assert order.uri in orders
    cl.deactivate_registration(regr)
    with pytest.raises(errors.Error) as excinfo:
        cl.new_order(csr_for("lib3.test")[0])
    assert excinfo.value.code == "unauthorized"


def test_acme_library_rsa_account_and_revocation_by_certificate_key(acme: AcmeServer, tmp_path: Path) -> None:
    key = jose.JWKRSA(key=rsa.generate_private_key(65537, 2048))
    cl = make_client(acme, key, jose.RS256)
    register(acme, cl, key, "gateway", "*.gw.test")
    cert_key = ec.generate_private_key(ec.SECP256R1())
    order = obtain(acme, cl, "vpn2.gw.test", profile="gateway", cert_key=cert_key)
    cert = verify_certificate(order.fullchain_pem.encode(), acme, tmp_path, {"vpn2.gw.test"}, profile="gateway")
    # another key cannot revoke it; the certificate's own key can (jwk-signed, no account: §7.6)
    stranger = make_client(acme, jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(errors.Error) as excinfo:
        stranger.revoke(cert, 1)
    assert excinfo.value.code == "unauthorized"
    make_client(acme, jose.JWKEC(key=cert_key)).revoke(cert, 1)
    with pytest.raises(errors.Error) as excinfo:
        cl.revoke(cert, 1)
    assert excinfo.value.code == "alreadyRevoked"


def test_acme_library_rejects_identifiers_outside_eab_policy(acme: AcmeServer) -> None:
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    cl = make_client(acme, key)
    register(acme, cl, key, "machine", "*.allowed.test")
    with pytest.raises(errors.Error) as excinfo:
        cl.new_order(csr_for("ok.allowed.test", "evil.other.test")[0])
    assert excinfo.value.code == "rejectedIdentifier"
    with pytest.raises(errors.Error) as excinfo:
        cl.new_order(csr_for("ok.allowed.test")[0], profile="gateway")
    assert excinfo.value.typ == "urn:ietf:params:acme:error:invalidProfile"


def test_acme_library_recovers_from_bad_nonce(acme: AcmeServer) -> None:
    """A stale nonce gets badNonce with a fresh Replay-Nonce; the library retries once and succeeds."""
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    cl = make_client(acme, key)
    register(acme, cl, key)
    cl.net._nonces.clear()
    cl.net._nonces.add(b"stale-nonce-that-was-never-issued")
    order = cl.new_order(csr_for("nonce.test")[0])
    assert order.body.status == messages.STATUS_PENDING
