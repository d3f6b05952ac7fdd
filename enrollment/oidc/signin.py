"""A person's browser sign-in at a configured provider: the :class:`ca.ports.OidcSignIn` port
(the console's OIDC sign-in), registered under the entry point group ``ikepki.oidc_signin``.

OpenID Connect Core 1.0 §3.1 (authorization code flow) with PKCE (RFC 7636 §4, ``S256`` only):

- :meth:`OidcBrowserSignIn.authorization_url`: the authorization request (§3.1.2.1) to the
  provider's ``authorization_endpoint`` from Discovery: ``response_type=code``, the client, its
  registered ``redirect_uri``, the provider's scopes, ``state``, ``nonce`` and the code challenge.
- :meth:`OidcBrowserSignIn.redeem`: the token request (§3.1.3.1, RFC 6749 §4.1.3) with the
  ``code_verifier``, the client authenticated with ``client_secret_basic`` (RFC 6749 §2.3.1) when it
  has a secret; then the ID token is verified by :func:`enrollment.oidc.tokens.verify` — the same
  verifier certificate enrollment uses (signature from the JWKS, ``iss``, ``aud`` = this client,
  ``azp``, times) — plus §3.1.3.7 item 11: ``nonce`` equal to the one this browser's sign-in sent
  (constant-time), and freshness (``iat``). The person: ``iss`` + ``sub``, the email only when
  verified (:func:`enrollment.oidc.service.verified_email`), the groups claim.

The caller (the console) binds ``state``, ``nonce`` and the verifier to the browser that started
the sign-in; access and refresh tokens are discarded.
"""

from __future__ import annotations

import hmac
from urllib.parse import quote_plus, urlencode

from ca.errors import ErrorKind, PKIError
from ca.model import UserIdentity
from ca.ports import CoreServices, OidcClient, OidcSignIn
from enrollment.oidc.service import check_fresh, groups_claim, subject_claim, verified_email
from enrollment.oidc.settings import OidcSettings, ProviderSettings, check_url
from enrollment.oidc.tokens import Jwks, TokenError, fetch_json, verify

MAX_CODE = 2048
MAX_PARAM = 256


class OidcBrowserSignIn:
    """Blocking (HTTP to the provider): call from a worker thread."""

    def __init__(self, deployment: CoreServices, settings: OidcSettings) -> None:
        self.dep, self.settings = deployment, settings
        self.jwks = {name: Jwks(p, settings.http_timeout_seconds) for name, p in settings.providers.items()}

    def providers(self) -> list[str]:
        return sorted(n for n, p in self.settings.providers.items() if p.enabled) if self.settings.enabled else []

    def _provider(self, name: str) -> ProviderSettings:
        p = self.settings.providers.get(name)
        if p is None or not p.enabled or not self.settings.enabled:
            raise PKIError(ErrorKind.FORBIDDEN, f"identity provider {name[:64]!r} is not configured or disabled")
        return p

    def _endpoint(self, name: str, key: str) -> str:
        doc = self.jwks[name].configuration()
        try:
            return check_url(str(doc.get(key, "")), key)
        except ValueError as exc:
            raise PKIError(ErrorKind.CONFIG, f"identity provider {name}: {exc}") from None

    def authorization_url(self, client: OidcClient, state: str, nonce: str, code_challenge: str) -> str:
        p = self._provider(client.provider)
        for value in (state, nonce, code_challenge):
            if not value or len(value) > MAX_PARAM:
                raise PKIError(ErrorKind.BAD_REQUEST, "state, nonce and code challenge: 1-256 characters")
        endpoint = self._endpoint(client.provider, "authorization_endpoint")
        query = urlencode({"response_type": "code", "client_id": client.client_id, "redirect_uri": client.redirect_uri,
                           "scope": " ".join(p.scopes), "state": state, "nonce": nonce,
                           "code_challenge": code_challenge, "code_challenge_method": "S256"})
        return f"{endpoint}?{query}"

    def redeem(self, client: OidcClient, code: str, code_verifier: str, nonce: str) -> UserIdentity:
        p = self._provider(client.provider)
        if not code or len(code) > MAX_CODE or not code.isprintable():
            raise TokenError("authorization code missing or malformed")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri,
                "code_verifier": code_verifier}
        auth = None
        if client.client_secret is None:
            form["client_id"] = client.client_id  # a public client names itself (RFC 6749 §4.1.3)
        else:
            auth = (quote_plus(client.client_id), quote_plus(client.client_secret))
        status, answer = fetch_json(self._endpoint(client.provider, "token_endpoint"),
                                    self.settings.http_timeout_seconds, form, auth)
        if status != 200:
            error = str(answer.get("error", status))[:64]
            raise TokenError(f"the identity provider refused the authorization code ({error})")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise TokenError("the identity provider's token response has no ID token")
        now = self.dep.clock.now()
        ours = p.model_copy(update={"client_ids": [client.client_id]})  # aud: this client only
        claims = verify(id_token, ours, self.jwks[client.provider], now, self.settings.max_token_bytes,
                        ("iss", "aud", "exp", "iat", "sub", "nonce")).claims
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise TokenError("ID token nonce does not match this sign-in (OpenID Connect Core §3.1.3.7)")
        check_fresh(p, claims, now)
        return UserIdentity(issuer=p.issuer, subject=subject_claim(claims), provider=client.provider,
                            email=verified_email(p, claims), groups=groups_claim(p, claims))


def sign_in(deployment: CoreServices) -> OidcSignIn:
    """Entry point ``ikepki.oidc_signin: oidc``."""
    return OidcBrowserSignIn(deployment, deployment.settings_for(OidcSettings, "oidc"))
