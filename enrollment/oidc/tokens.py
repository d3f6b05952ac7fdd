"""Verifying the provider's JWTs: ID tokens (OpenID Connect Core 1.0 §3.1.3.7) and logout tokens
(OpenID Connect Back-Channel Logout 1.0 §2.6), signatures checked against the provider's JWKS
(RFC 7517) found through Discovery (OpenID Connect Discovery 1.0 §4).

Only asymmetric algorithms from the provider's allow-list are accepted (``none`` and HS* never:
an HMAC "signed" with a public key proves nothing, RFC 8725 §2.1/§3.1). The JWKS is cached and
fetched again when a token names an unknown ``kid`` (key rotation), at most every
``jwks_refresh_min_seconds`` so unknown kids cannot make us hammer the provider.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import jwt

from ca.errors import ErrorKind, PKIError
from enrollment.oidc.settings import ProviderSettings, check_url

MAX_DOC_BYTES = 1024 * 1024
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class TokenError(PKIError):
    """A token we refuse (RFC 6750 §3.1 ``invalid_token``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorKind.UNAUTHORIZED, detail)


def _b64json(part: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("token is not a JWS in compact serialization") from None
    if not isinstance(value, dict):
        raise TokenError("token header is not a JSON object")
    return value


def unverified_header(token: str, max_bytes: int) -> dict[str, Any]:
    """The JOSE header (RFC 7515 §4), refusing what is not a signed compact JWS."""
    if len(token) > max_bytes:
        raise TokenError(f"token longer than {max_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenError("token is not a JWS in compact serialization (a JWE or malformed)")
    header = _b64json(parts[0])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or not parts[2]:
        raise TokenError("unsigned token (alg none) refused")
    if "crit" in header:
        raise TokenError("token has critical header parameters we do not understand (RFC 7515 §4.1.11)")
    return header


def fetch_json(url: str, timeout: float, form: Mapping[str, str] | None = None,
               auth: tuple[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """GET (or, with ``form``, POST ``application/x-www-form-urlencoded``) a JSON object from the
    provider: (status, object). No redirects, at most MAX_DOC_BYTES; UNAVAILABLE otherwise."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, auth=auth) as client, \
                client.stream("POST" if form is not None else "GET", url, data=form,
                              headers={"accept": "application/json"}) as resp:
            status = resp.status_code
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_DOC_BYTES:
                    raise PKIError(ErrorKind.UNAVAILABLE, f"identity provider: {url} too large")
    except httpx.HTTPError as exc:
        raise PKIError(ErrorKind.UNAVAILABLE, f"identity provider unreachable: {type(exc).__name__}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise PKIError(ErrorKind.UNAVAILABLE, f"identity provider: {url} answered {status}, not JSON") from None
    if not isinstance(doc, dict):
        raise PKIError(ErrorKind.UNAVAILABLE, f"identity provider: {url} is not a JSON object")
    return status, doc


class Jwks:
    """The provider's discovery document and signing keys, cached (thread-safe)."""

    def __init__(self, provider: ProviderSettings, timeout: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.provider, self.timeout, self.monotonic = provider, timeout, monotonic
        self._lock = threading.RLock()
        self._config: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None

    def _get(self, url: str) -> dict[str, Any]:
        status, doc = fetch_json(url, self.timeout)
        if status != 200:
            raise PKIError(ErrorKind.UNAVAILABLE, f"identity provider: {url} answered {status}")
        return doc

    def configuration(self) -> dict[str, Any]:
        """The discovery document; its ``issuer`` must equal the configured one (Discovery §4.3)."""
        with self._lock:
            if self._config is None:
                doc = self._get(self.provider.discovery)
                if doc.get("issuer") != self.provider.issuer:
                    raise PKIError(ErrorKind.CONFIG, "identity provider: discovery issuer "
                                                     f"{str(doc.get('issuer'))[:100]!r} is not the configured one")
                try:
                    check_url(str(doc.get("jwks_uri", "")), "jwks_uri")
                except ValueError as exc:
                    raise PKIError(ErrorKind.CONFIG, f"identity provider: {exc}") from None
                self._config = doc
            return self._config

    def _refresh(self) -> None:
        doc = self._get(str(self.configuration()["jwks_uri"]))
        keys: dict[str, jwt.PyJWK] = {}
        for i, jwk in enumerate(doc.get("keys") or []):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
                continue
            try:
                key = jwt.PyJWK(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # algorithms we do not support are skipped, not fatal
            keys[str(jwk.get("kid", f"#{i}"))] = key
        self._keys, self._fetched_at = keys, self.monotonic()

    def key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The signing key named by ``kid`` (the only one, when the token names none)."""
        with self._lock:
            now = self.monotonic()
            stale = self._fetched_at is None or now - self._fetched_at > self.provider.jwks_max_age_seconds
            unknown = kid is not None and kid not in self._keys
            may_refresh = self._fetched_at is None or now - self._fetched_at >= self.provider.jwks_refresh_min_seconds
            if stale or (unknown and may_refresh):
                self._refresh()
            if kid is None:
                candidates = [k for k in self._keys.values() if k.algorithm_name == alg]
                if len(candidates) != 1:
                    raise TokenError("token names no key (kid) and the provider has several")
                return candidates[0]
            found = self._keys.get(kid)
        if found is None:
            raise TokenError("token signed with a key the provider does not publish (unknown kid)")
        return found


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict[str, Any]
    header: dict[str, Any]


def verify(token: str, provider: ProviderSettings, jwks: Jwks, now: datetime, max_bytes: int,
           require: tuple[str, ...]) -> VerifiedToken:
    """Signature (allowed asymmetric alg, key from the JWKS whose type fits the alg), ``iss``,
    ``aud`` (one of the client ids; with several audiences ``azp`` must be ours, Core §3.1.3.7
    items 3-5), ``exp``/``iat``/``nbf`` with the configured skew."""
    header = unverified_header(token, max_bytes)
    alg = header["alg"]
    if alg not in provider.algorithms:
        raise TokenError(f"token algorithm {alg[:20]!r} is not allowed for this provider")
    kid = header.get("kid")
    key = jwks.key(kid if isinstance(kid, str) else None, alg)
    _check_key_fits(key, alg)
    try:
        claims = jwt.decode(token, key.key, algorithms=[alg], audience=provider.client_ids, issuer=provider.issuer,
                            leeway=provider.clock_skew_seconds,
                            # times are checked against the injected clock below
                            options={"require": list(require), "verify_exp": False, "verify_iat": False,
                                     "verify_nbf": False})
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidAudienceError:
        raise TokenError("token audience is not this service") from None
    except jwt.InvalidIssuerError:
        raise TokenError("token issuer is not the provider's") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("token not yet valid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim} claim") from None
    except jwt.InvalidSignatureError:
        raise TokenError("token signature invalid") from None
    except (jwt.InvalidTokenError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise TokenError(f"token invalid: {str(exc)[:120]}") from None
    _check_times(claims, now, provider.clock_skew_seconds, "exp" in require)
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") not in provider.client_ids:
        raise TokenError("token has several audiences and its azp is not this service")
    return VerifiedToken(claims, header)


KTY_FOR = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _check_key_fits(key: jwt.PyJWK, alg: str) -> None:
    """The JWK's ``alg`` (when given) equals the header's, and its key type fits the algorithm."""
    data = getattr(key, "_jwk_data", {})
    if data.get("alg") and data["alg"] != alg:
        raise TokenError("token algorithm does not match the provider key's algorithm")
    if data.get("kty") != KTY_FOR.get(alg[:2]):
        raise TokenError("token algorithm does not fit the provider key's type")


def _num(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"token claim {name} is not a number")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: datetime, skew: int, need_exp: bool) -> None:
    """Against the injected clock (PyJWT used the system clock)."""
    t = now.timestamp()
    exp, iat, nbf = _num(claims, "exp"), _num(claims, "iat"), _num(claims, "nbf")
    if need_exp and (exp is None or exp + skew <= t):
        raise TokenError("token expired")
    if iat is not None and iat - skew > t:
        raise TokenError("token issued in the future")
    if nbf is not None and nbf - skew > t:
        raise TokenError("token not yet valid")


def logout_claims(token: str, provider: ProviderSettings, jwks: Jwks, now: datetime, max_bytes: int
                  ) -> dict[str, Any]:
    """A Logout Token (Back-Channel Logout 1.0 §2.4, validated per §2.6): signed, ``iss``,
    ``aud``, ``iat`` (no older than ``max_token_age_seconds``), ``jti``, the back-channel
    logout member in ``events`` (a JSON object), ``sub`` and/or ``sid``, and no ``nonce``."""
    header = unverified_header(token, max_bytes)
    if header.get("typ") not in (None, "logout+jwt", "application/logout+jwt", "JWT"):
        raise TokenError("logout token has the wrong typ")
    claims = verify(token, provider, jwks, now, max_bytes, ("iss", "aud", "iat", "jti")).claims
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise TokenError("logout token lacks the back-channel logout event")
    if "nonce" in claims:
        raise TokenError("logout token must not contain a nonce (§2.4)")
    sub, sid = claims.get("sub"), claims.get("sid")
    if not isinstance(sub, str) and not isinstance(sid, str):
        raise TokenError("logout token names neither sub nor sid")
    if not isinstance(claims.get("jti"), str) or len(claims["jti"]) > 255:
        raise TokenError("logout token jti invalid")
    iat = _num(claims, "iat") or 0.0
    if now.timestamp() - iat > provider.max_token_age_seconds + provider.clock_skew_seconds:
        raise TokenError("logout token too old")
    return claims
