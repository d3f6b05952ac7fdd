"""ID-token and logout-token verification and claim mapping (enrollment.oidc.tokens/service)
against a provider stand-in serving discovery + JWKS over real HTTP."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ca.errors import ErrorKind, PKIError
from enrollment.oidc.service import map_claims
from enrollment.oidc.settings import ProviderSettings
from enrollment.oidc.tokens import LOGOUT_EVENT, Jwks, TokenError, logout_claims, unverified_header, verify
from tests.oidc.jwks_server import KeyServer

REQ = ("iss", "aud", "exp", "iat", "sub")


@pytest.fixture(scope="module")
def ks() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.stop()


def provider(ks: KeyServer, **over: object) -> ProviderSettings:
    return ProviderSettings(issuer=ks.issuer, client_ids=["ikepki-vpn"],
                            group_roles={"vpn-staff": "staff", "vpn-contractors": "contractors"}, **over)  # type: ignore[arg-type]


def now() -> datetime:
    return datetime.now(UTC)


def check(ks: KeyServer, token: str, p: ProviderSettings | None = None) -> dict[str, object]:
    p = p or provider(ks)
    return verify(token, p, Jwks(p), now(), 16384, REQ).claims


def refused(ks: KeyServer, token: str, match: str, p: ProviderSettings | None = None) -> None:
    with pytest.raises(TokenError, match=match):
        check(ks, token, p)


def test_valid_tokens_from_both_keys(ks: KeyServer) -> None:
    assert check(ks, ks.sign(ks.claims()))["sub"] == "alice"
    assert check(ks, ks.sign(ks.claims(sub="bob"), kid="ec-1"))["sub"] == "bob"


def test_refusals(ks: KeyServer) -> None:
    t = int(time.time())
    refused(ks, ks.sign(ks.claims(exp=t - 120)), "expired")
    refused(ks, ks.sign(ks.claims(aud="someone-else")), "audience")
    refused(ks, ks.sign(ks.claims(iss="https://evil.example")), "issuer")
    refused(ks, ks.sign(ks.claims(iat=t + 3600)), "future")
    refused(ks, ks.sign(ks.claims(nbf=t + 3600)), "not yet valid")
    no_sub = ks.claims()
    del no_sub["sub"]
    refused(ks, ks.sign(no_sub), "sub")
    refused(ks, ks.sign(ks.claims(aud=["ikepki-vpn", "other"])), "azp")
    assert check(ks, ks.sign(ks.claims(aud=["ikepki-vpn", "other"], azp="ikepki-vpn")))["sub"] == "alice"
    # unsigned: alg none, with or without a signature part
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(ks.claims()).encode()).rstrip(b"=").decode()
    refused(ks, f"{header}.{body}.", "alg none")
    refused(ks, f"{header}.{body}.c2ln", "alg none")
    # HS256 "signed" with the provider's public key as the HMAC secret (RFC 8725 §2.1)
    pem = ks.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = jwt.api_jws.PyJWS().encode(json.dumps(ks.claims()).encode(), pem.hex().encode(), algorithm="HS256",
                                        headers={"kid": "rsa-1"})
    refused(ks, forged, "not allowed")
    # an RSA kid with an ES256 header: the key type must fit the algorithm
    other = ec.generate_private_key(ec.SECP256R1())
    refused(ks, jwt.encode(ks.claims(), other, algorithm="ES256", headers={"kid": "rsa-1"}), "algorithm")
    # signed by a key the provider does not publish, under a published kid
    refused(ks, jwt.encode(ks.claims(), other, algorithm="ES256", headers={"kid": "ec-1"}), "signature")
    # tampered payload
    good = ks.sign(ks.claims()).split(".")
    evil = base64.urlsafe_b64encode(json.dumps(ks.claims(sub="root")).encode()).rstrip(b"=").decode()
    refused(ks, f"{good[0]}.{evil}.{good[2]}", "signature")
    refused(ks, ks.sign(ks.claims(), headers={"crit": ["exp"]}), "critical")
    refused(ks, "a.b", "compact")
    refused(ks, "x" * 20000, "longer")


def test_algorithm_allow_list_never_none_or_hmac(ks: KeyServer) -> None:
    for bad in (["none"], ["HS256"], ["RS256", "HS512"]):
        with pytest.raises(ValidationError, match="not allowed"):
            provider(ks, algorithms=bad)
    only_es = provider(ks, algorithms=["ES256"])
    refused(ks, ks.sign(ks.claims()), "not allowed", only_es)
    with pytest.raises(ValidationError, match="https"):
        ProviderSettings(issuer="http://idp.example.com", client_ids=["x"])


def test_unknown_kid_refetches_the_jwks_at_most_every_refresh_interval(ks: KeyServer) -> None:
    p = provider(ks, jwks_refresh_min_seconds=0.5)
    jwks = Jwks(p)
    assert verify(ks.sign(ks.claims()), p, jwks, now(), 16384, REQ)
    hits = ks.jwks_hits
    rotated = ec.generate_private_key(ec.SECP256R1())
    ks.keys["ec-2"] = rotated
    try:
        time.sleep(0.6)
        assert verify(ks.sign(ks.claims(), kid="ec-2"), p, jwks, now(), 16384, REQ)  # rotation picked up
        assert ks.jwks_hits == hits + 1
        for _ in range(5):  # unknown kids within the interval: no fetch
            with pytest.raises(TokenError, match="unknown kid"):
                verify(jwt.encode(ks.claims(), rotated, algorithm="ES256", headers={"kid": "nope"}), p, jwks, now(),
                       16384, REQ)
        assert ks.jwks_hits == hits + 1
    finally:
        del ks.keys["ec-2"]


def logout(ks: KeyServer, **over: object) -> dict[str, object]:
    c = {"iss": ks.issuer, "aud": "ikepki-vpn", "iat": int(time.time()), "jti": "j-" + str(time.time_ns()),
         "sub": "alice", "sid": "s1", "events": {LOGOUT_EVENT: {}}, **over}
    return {k: v for k, v in c.items() if v is not None}


def test_logout_token_rules(ks: KeyServer) -> None:
    p = provider(ks)
    jw = Jwks(p)
    ok = logout_claims(ks.sign(logout(ks), headers={"typ": "logout+jwt"}), p, jw, now(), 16384)
    assert ok["sid"] == "s1"
    assert logout_claims(ks.sign(logout(ks, sid=None)), p, jw, now(), 16384)["sub"] == "alice"
    for claims, match in ((logout(ks, nonce="n"), "nonce"), (logout(ks, events=None), "event"),
                          (logout(ks, events={LOGOUT_EVENT: "x"}), "event"),
                          (logout(ks, sub=None, sid=None), "neither"),
                          (logout(ks, jti=None), "jti"), (logout(ks, iat=int(time.time()) - 3600), "too old"),
                          (logout(ks, aud="other"), "audience")):
        with pytest.raises(TokenError, match=match):
            logout_claims(ks.sign(claims), p, jw, now(), 16384)
    with pytest.raises(TokenError, match="typ"):
        logout_claims(ks.sign(logout(ks), headers={"typ": "at+jwt"}), p, jw, now(), 16384)


def test_claim_mapping(ks: KeyServer) -> None:
    p = provider(ks, allowed_email_domains=["example.test"])
    t = now()
    m = map_claims(p, "corp", ks.claims(groups=["vpn-staff", "other", "vpn-contractors"]), t, "laptop-1")
    assert m.identity.uri == f"{ks.issuer}#alice" and m.identity.roles == ("contractors", "staff")
    assert m.sans == (x509.RFC822Name("alice@example.test"), x509.UniformResourceIdentifier(f"{ks.issuer}#alice"))
    assert [a.value for a in m.subject] == ["alice@example.test", "contractors", "staff"]
    assert m.lifetime == timedelta(hours=8)
    # unverified email: no email SAN (and this provider then refuses: it requires an allowed domain)
    with pytest.raises(PKIError) as exc:
        map_claims(p, "corp", ks.claims(email_verified=False), t)
    assert exc.value.kind is ErrorKind.FORBIDDEN
    anyone = provider(ks)
    m = map_claims(anyone, "corp", ks.claims(email_verified="true", sub="a b/c#d"), t)
    assert m.sans == (x509.UniformResourceIdentifier(f"{ks.issuer}#a%20b%2Fc%23d"),)
    with pytest.raises(PKIError, match="domain"):
        map_claims(p, "corp", ks.claims(email="eve@evil.test"), t)
    # never beyond auth_time + max_session_hours
    m = map_claims(anyone, "corp", ks.claims(auth_time=int(t.timestamp()) - 11 * 3600), t)
    assert timedelta(minutes=59) < m.lifetime <= timedelta(hours=1)
    with pytest.raises(PKIError, match="too old"):
        map_claims(anyone, "corp", ks.claims(auth_time=int(t.timestamp()) - 12 * 3600), t)
    with pytest.raises(TokenError, match="older"):
        map_claims(anyone, "corp", ks.claims(iat=int(t.timestamp()) - 3600), t)
    with pytest.raises(PKIError, match="grants"):
        map_claims(provider(ks, require_role=True), "corp", ks.claims(groups=["other"]), t)
    for bad in ({"groups": "x" * 300}, {"groups": [1]}, {"groups": ["g"] * 201}, {"sub": ""}, {"sub": 5}):
        with pytest.raises(TokenError):
            map_claims(anyone, "corp", ks.claims(**bad), t)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.lists(st.binary(max_size=80), min_size=3, max_size=3).map(
    lambda parts: ".".join(base64.urlsafe_b64encode(p).rstrip(b"=").decode() for p in parts))))
def test_fuzz_token_parser_only_refuses_cleanly(ks: KeyServer, token: str) -> None:
    try:
        header = unverified_header(token, 16384)
    except TokenError:
        return
    assert isinstance(header, dict)
    with pytest.raises(PKIError):
        check(ks, token)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                     lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["sub", "email", "email_verified", "groups", "auth_time", "sid", "exp",
                                        "extra"]), _json, max_size=8))
def test_fuzz_claim_mapping_refuses_cleanly(ks: KeyServer, over: dict[str, object]) -> None:
    """Whatever a (verified) token carries, mapping either succeeds with bounded values or refuses."""
    try:
        m = map_claims(provider(ks), "corp", ks.claims(**over), now())
    except PKIError:
        return
    assert len(m.identity.subject) <= 255 and len(m.identity.groups) <= 200
    assert timedelta(0) < m.lifetime <= timedelta(hours=8)
