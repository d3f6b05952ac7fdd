"""The browser sign-in port (enrollment.oidc.signin, ca.ports.OidcSignIn) against the provider
stand-in (discovery, JWKS and a token endpoint over real HTTP, keys we hold): the authorization
request, the token request, and the ID token refused for every defect the console relies on
(nonce of another sign-in, another client's audience, expired, unsigned, wrong issuer). The full
flow against the real oidc-provider is tests/console/test_oidc.py."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from ca.errors import ErrorKind, PKIError
from ca.ports import OidcClient, oidc_sign_in
from enrollment.oidc.settings import OidcSettings, ProviderSettings
from enrollment.oidc.signin import OidcBrowserSignIn
from tests.oidc.jwks_server import KeyServer

NONCE = "n-0S6_WzA2Mj"
CLIENT_ID = "ikepki-console"


@pytest.fixture(scope="module")
def ks() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.stop()


def signin(ks: KeyServer, **over: object) -> OidcBrowserSignIn:
    p = ProviderSettings(issuer=ks.issuer, client_ids=["ikepki-vpn"], **over)  # type: ignore[arg-type]
    clock = SimpleNamespace(now=lambda: datetime.now(UTC))
    return OidcBrowserSignIn(SimpleNamespace(clock=clock), OidcSettings(providers={"corp": p}))  # type: ignore[arg-type]


def client(secret: str | None = "s3cr%t") -> OidcClient:
    return OidcClient("corp", CLIENT_ID, secret, "https://pki.example.test/console/oidc/callback")


def answer(ks: KeyServer, token: str) -> None:
    ks.token_answer = (200, {"access_token": "at", "token_type": "Bearer", "id_token": token})


def test_authorization_request_carries_state_nonce_and_s256_challenge(ks: KeyServer) -> None:
    url = signin(ks).authorization_url(client(), "st", NONCE, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert url.startswith(ks.issuer + "/auth?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q == {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": client().redirect_uri,
                 "scope": "openid email profile groups", "state": "st", "nonce": NONCE,
                 "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}
    with pytest.raises(PKIError):
        signin(ks).authorization_url(client(), "", NONCE, "c")
    with pytest.raises(PKIError, match="not configured or disabled"):
        signin(ks, enabled=False).authorization_url(client(), "st", NONCE, "c")


def test_redeem_sends_the_verifier_and_authenticates_the_client(ks: KeyServer) -> None:
    answer(ks, ks.sign(ks.claims(aud=CLIENT_ID, nonce=NONCE, groups=["pki-admins", "x"]), kid="ec-1"))
    ks.token_requests.clear()
    person = signin(ks).redeem(client(), "the-code", "the-verifier", NONCE)
    assert (person.issuer, person.subject, person.email, person.groups) == (
        ks.issuer, "alice", "alice@example.test", ("pki-admins", "x"))
    form, auth = ks.token_requests[-1]
    assert form == {"grant_type": "authorization_code", "code": "the-code", "redirect_uri": client().redirect_uri,
                    "code_verifier": "the-verifier"}
    # RFC 6749 §2.3.1: id and secret form-urlencoded, then HTTP Basic
    assert auth == "Basic " + base64.b64encode(b"ikepki-console:s3cr%25t").decode()
    # a public client names itself in the body and sends no credentials
    signin(ks).redeem(client(None), "the-code", "v", NONCE)
    form, auth = ks.token_requests[-1]
    assert form["client_id"] == CLIENT_ID and auth is None


def test_unverified_email_is_not_the_persons(ks: KeyServer) -> None:
    answer(ks, ks.sign(ks.claims(aud=CLIENT_ID, nonce=NONCE, email_verified=False)))
    assert signin(ks).redeem(client(), "c", "v", NONCE).email is None


@pytest.mark.parametrize("defect,claims,match", [
    ("nonce-of-another-sign-in", {"nonce": "other"}, "nonce does not match"),
    ("no-nonce", {"nonce": None}, "lacks the nonce"),
    ("the-vpn-clients-token", {"aud": "ikepki-vpn"}, "audience"),
    ("expired", {"exp": -3600, "iat": -4000}, "expired"),  # times: seconds from when the test runs
    ("other-issuer", {"iss": "https://evil.example"}, "issuer"),
    ("stale", {"iat": -3600, "exp": 300}, "older than"),
])
def test_id_token_defects_are_refused(ks: KeyServer, defect: str, claims: dict[str, object], match: str) -> None:
    base = ks.claims(aud=CLIENT_ID, nonce=NONCE)
    # relative to now, not to collection: the suite may reach this test many minutes later
    base.update({k: int(time.time()) + v if k in ("exp", "iat") and isinstance(v, int) else v
                 for k, v in claims.items()})
    answer(ks, ks.sign({k: v for k, v in base.items() if v is not None}))
    with pytest.raises(PKIError, match=match) as exc:
        signin(ks).redeem(client(), "c", "v", NONCE)
    assert exc.value.kind is ErrorKind.UNAUTHORIZED, defect


def test_unsigned_token_and_refused_code(ks: KeyServer) -> None:
    unsigned = ks.sign(ks.claims(aud=CLIENT_ID, nonce=NONCE)).rsplit(".", 1)[0] + "."
    answer(ks, unsigned)
    with pytest.raises(PKIError, match=r"unsigned token \(alg none\)"):
        signin(ks).redeem(client(), "c", "v", NONCE)
    ks.token_answer = (400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
    with pytest.raises(PKIError, match=r"refused the authorization code \(invalid_grant\)"):
        signin(ks).redeem(client(), "c", "v", NONCE)
    ks.token_answer = (200, {"access_token": "only"})
    with pytest.raises(PKIError, match="no ID token"):
        signin(ks).redeem(client(), "c", "v", NONCE)
    with pytest.raises(PKIError, match="malformed"):
        signin(ks).redeem(client(), "bad\ncode", "v", NONCE)


def test_the_port_is_registered_for_the_console() -> None:
    dep = SimpleNamespace(settings_for=lambda cls, section: cls(), clock=None)
    assert isinstance(oidc_sign_in(dep), OidcBrowserSignIn)
