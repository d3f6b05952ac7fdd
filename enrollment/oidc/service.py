"""Issuing ``user`` certificates from ID tokens, and OIDC Back-Channel Logout.

Enrollment (``POST /user/v1/certificates``), in this order so a refused request changes nothing:

1. find the provider (the request names it, else the token's ``iss``); a disabled one is refused;
2. verify the ID token (:func:`enrollment.oidc.tokens.verify`: signature, ``iss``, ``aud``, times)
   and that it is fresh (``iat`` within ``max_token_age_seconds``: device-grant tokens carry no
   client nonce, so freshness and single use are the replay protection);
3. map claims: ``iss``+``sub`` -> the identity (URI SAN ``<iss>#<sub>``, :attr:`UserIdentity.uri`);
   the email claim -> an rfc822Name SAN only when ``email_verified`` is true and its domain is
   allowed; the groups claim -> roles through ``group_roles`` (CA-controlled: the subject's OU
   attributes, which the bundled responder's policy reads as ``role``);
4. parse the CSR (its self-signature; its names are ignored: every name comes from the token);
5. the lifetime: at most ``max_lifetime_hours`` and never beyond ``auth_time`` (else ``iat``)
   + ``max_session_hours``;
6. redeem the token (one INSERT of its SHA-256: of two replicas racing, one wins), then issue
   through the Authority, which records certificate, audit row and user mapping in one
   transaction. If issuance fails the redemption is released so the user can retry.

Back-channel logout (OpenID Connect Back-Channel Logout 1.0 §2.5-2.8): the logout token is
verified (:func:`enrollment.oidc.tokens.logout_claims`), its ``jti`` accepted once, and the live
certificates of that ``sub`` / ``sid`` are held (``certificateHold``) or revoked
(``privilegeWithdrawn``) through :func:`ca.revocation.execute`; the revocation push then deletes
their SAs on the gateways.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from ca.csr import parse_csr
from ca.errors import ErrorKind, PKIError
from ca.model import (
    CertificateInfo,
    IssuanceRequest,
    IssuedCertificate,
    Requester,
    RevocationReason,
    UserIdentity,
)
from ca.ports import CoreServices, person_signed_out
from ca.revocation import execute
from ca.store.db import Database
from enrollment.oidc.records import OidcTokenUseRecord
from enrollment.oidc.settings import OidcSettings, ProviderSettings
from enrollment.oidc.tokens import Jwks, TokenError, _b64json, logout_claims, verify

log = logging.getLogger("ikepki.oidc")
USES = OidcTokenUseRecord.__table__  # type: ignore[attr-defined]
CHANNEL = "oidc"
MAX_CLAIM = 255
MAX_GROUPS = 200
MAX_CN = 64


class TokenUses:
    """Tokens already used (``oidc_token_uses``): insert-once, so replicas cannot both redeem."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, key: str, kind: str, provider: str, subject: str, now: datetime, expires_at: datetime) -> bool:
        try:
            with self.db.write() as conn:
                conn.execute(delete(USES).where(USES.c.expires_at < now - timedelta(days=1)))
                conn.execute(insert(USES), {"token_sha256": key, "kind": kind, "provider": provider,
                                            "subject": subject[:MAX_CLAIM], "used_at": now,
                                            "expires_at": expires_at})
        except IntegrityError:
            return False
        return True

    def release(self, key: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(USES).where(USES.c.token_sha256 == key, USES.c.serial.is_(None)))

    def finalize(self, key: str, serial: int) -> None:
        with self.db.write() as conn:
            conn.execute(update(USES).where(USES.c.token_sha256 == key).values(serial=format(serial, "x")))


@dataclass(frozen=True)
class EnrollCall:
    id_token: str
    csr: bytes
    provider: str | None = None
    device: str | None = None
    source: str = ""


@dataclass(frozen=True)
class UserClaims:
    """What the verified token says about the user, after the provider's mapping."""

    identity: UserIdentity
    lifetime: timedelta
    sans: tuple[x509.GeneralName, ...]
    subject: x509.Name
    expires_at: datetime


def _str_claim(claims: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM:
        raise TokenError(f"token claim {name} must be a string of 1-{MAX_CLAIM} characters")
    return value


def _time(claims: dict[str, Any], name: str, default: float | None) -> float:
    """A NumericDate claim (RFC 7519 §2) within a sane range (years 2000-2200)."""
    value = claims.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 946_684_800 <= value <= 7_258_118_400:
        raise TokenError(f"token claim {name} is not a valid time")
    return float(value)


def subject_claim(claims: dict[str, Any]) -> str:
    """``sub`` (Core §2: locally unique, never reassigned): 1-255 characters, no control characters."""
    sub = _str_claim(claims, "sub", required=True)
    assert sub is not None
    if any(ord(ch) < 0x20 for ch in sub):
        raise TokenError("token sub contains control characters")
    return sub


def check_fresh(p: ProviderSettings, claims: dict[str, Any], now: datetime) -> float:
    """``iat`` within ``max_token_age_seconds`` (+ skew) of now; returns it."""
    iat = _time(claims, "iat", None)
    if now.timestamp() - iat > p.max_token_age_seconds + p.clock_skew_seconds:
        raise TokenError(f"token older than {p.max_token_age_seconds} s: sign in again")
    return iat


def verified_email(p: ProviderSettings, claims: dict[str, Any]) -> str | None:
    """The email claim when the provider says it is verified (``email_verified``, Core §5.1) and
    its domain is allowed; a provider with allowed domains requires one."""
    raw_email = _str_claim(claims, p.email_claim)
    verified = claims.get("email_verified") is True or not p.require_email_verified
    if raw_email and verified:
        domain = raw_email.rpartition("@")[2].lower()
        if p.allowed_email_domains and domain not in p.allowed_email_domains:
            raise PKIError(ErrorKind.FORBIDDEN, f"email domain {domain[:80]!r} is not allowed for this provider")
        return raw_email
    if p.allowed_email_domains:
        raise PKIError(ErrorKind.FORBIDDEN, "this provider requires a verified email in an allowed domain")
    return None


def groups_claim(p: ProviderSettings, claims: dict[str, Any]) -> tuple[str, ...]:
    """The provider's groups of the user (the configured claim; a single string counts as one)."""
    raw_groups = claims.get(p.groups_claim, [])
    if isinstance(raw_groups, str):
        raw_groups = [raw_groups]
    if not isinstance(raw_groups, list) or len(raw_groups) > MAX_GROUPS or not all(
            isinstance(g, str) and 0 < len(g) <= MAX_CLAIM for g in raw_groups):
        raise TokenError(f"token claim {p.groups_claim} must be a list of at most {MAX_GROUPS} strings")
    return tuple(dict.fromkeys(raw_groups))


def map_claims(p: ProviderSettings, name: str, claims: dict[str, Any], now: datetime,
               device: str | None = None) -> UserClaims:
    """The certificate's identity, names, roles and lifetime from verified ID-token claims."""
    sub = subject_claim(claims)
    iat = check_fresh(p, claims, now)
    email = verified_email(p, claims)
    groups = groups_claim(p, claims)
    roles = tuple(sorted({p.group_roles[g] for g in groups if g in p.group_roles}))
    if p.require_role and not roles:
        raise PKIError(ErrorKind.FORBIDDEN, "none of the user's groups grants VPN access")
    auth_time = _time(claims, "auth_time", iat)
    session_end = datetime.fromtimestamp(auth_time + p.max_session_hours * 3600, now.tzinfo)
    lifetime = min(timedelta(hours=p.max_lifetime_hours), session_end - now)
    if lifetime < timedelta(minutes=5):
        raise PKIError(ErrorKind.FORBIDDEN, "the sign-in is too old for a certificate: sign in again")
    sid = claims.get("sid") if isinstance(claims.get("sid"), str) and len(claims["sid"]) <= MAX_CLAIM else None
    if device is not None and (len(device) > MAX_CLAIM or not device.isprintable()):
        raise PKIError(ErrorKind.BAD_REQUEST, "device name: at most 255 printable characters")
    identity = UserIdentity(issuer=p.issuer, subject=sub, provider=name, email=email, groups=groups, roles=roles,
                            device=device, session=sid)
    try:
        sans: list[x509.GeneralName] = [x509.RFC822Name(email)] if email else []
    except ValueError:
        raise PKIError(ErrorKind.REJECTED_IDENTIFIER, "the email claim is not an ASCII email address") from None
    sans.append(x509.UniformResourceIdentifier(identity.uri))
    cn = (email or sub)[:MAX_CN]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                         *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, r) for r in roles)])
    exp = datetime.fromtimestamp(_time(claims, "exp", iat + p.max_token_age_seconds), now.tzinfo)
    return UserClaims(identity, lifetime, tuple(sans), subject, max(exp, now) + timedelta(
        seconds=p.clock_skew_seconds + p.max_token_age_seconds))


class UserCertService:
    """The OIDC front of the Authority (one per deployment)."""

    def __init__(self, deployment: CoreServices, settings: OidcSettings) -> None:
        self.dep, self.settings = deployment, settings
        self.jwks = {name: Jwks(p, settings.http_timeout_seconds) for name, p in settings.providers.items()}
        self.uses = TokenUses(deployment.db)

    def provider(self, name: str | None, token: str | None = None) -> tuple[str, ProviderSettings]:
        if name is None and token:
            parts = token.split(".")
            iss = _b64json(parts[1]).get("iss") if len(parts) == 3 and len(token) <= self.settings.max_token_bytes \
                else None
            name = next((n for n, p in self.settings.providers.items() if p.issuer == iss), None)
            if name is None:
                raise TokenError("token issuer is not a configured identity provider")
        p = self.settings.providers.get(name or "")
        if p is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no identity provider {str(name)[:64]!r}")
        if not p.enabled:
            raise PKIError(ErrorKind.FORBIDDEN, f"identity provider {name} is disabled")
        assert name is not None
        return name, p

    def public_providers(self) -> dict[str, dict[str, Any]]:
        """What ``ikepki user enroll`` needs to run the device grant (no secrets)."""
        return {n: {"issuer": p.issuer, "client_id": p.device_client_id or p.client_ids[0], "scopes": p.scopes}
                for n, p in self.settings.providers.items() if p.enabled}

    def enroll(self, call: EnrollCall) -> tuple[IssuedCertificate, UserIdentity]:
        name, p = self.provider(call.provider, call.id_token)
        now = self.dep.clock.now()
        claims = verify(call.id_token, p, self.jwks[name], now, self.settings.max_token_bytes,
                        ("iss", "aud", "exp", "iat", "sub")).claims
        mapped = map_claims(p, name, claims, now, call.device)
        csr = parse_csr(call.csr)
        key = hashlib.sha256(call.id_token.encode()).hexdigest()
        if not self.uses.claim(key, "id_token", name, mapped.identity.subject, now, mapped.expires_at):
            raise TokenError("this ID token was already redeemed: sign in again")
        try:
            issued = self.dep.authority.issue(IssuanceRequest(
                csr, p.profile, Requester(CHANNEL, mapped.identity.principal[:255], call.source),
                lifetime=mapped.lifetime, replace_sans=mapped.sans, replace_subject=mapped.subject,
                user=mapped.identity))
        except BaseException:
            self.uses.release(key)
            raise
        self.uses.finalize(key, issued.serial)
        return issued, mapped.identity

    def backchannel_logout(self, provider: str, logout_token: str, source: str = "") -> list[CertificateInfo]:
        name, p = self.provider(provider)
        now = self.dep.clock.now()
        claims = logout_claims(logout_token, p, self.jwks[name], now, self.settings.max_token_bytes)
        key = hashlib.sha256(f"{p.issuer}\0{claims['jti']}".encode()).hexdigest()
        expires = now + timedelta(seconds=2 * (p.max_token_age_seconds + p.clock_skew_seconds))
        sub, sid = claims.get("sub"), claims.get("sid")
        if not self.uses.claim(key, "logout", name, str(sub or sid), now, expires):
            raise TokenError("logout token replayed (jti already seen)")
        serials = self.dep.store.user_session_serials(p.issuer, sub if isinstance(sub, str) else None,
                                                      sid if isinstance(sid, str) else None)
        targets = list(self.dep.store.get_many(serials).values())
        reason = RevocationReason.certificateHold if p.logout_action == "hold" else RevocationReason.privilegeWithdrawn
        try:
            done, _ = execute(self.dep.authority, targets, reason,
                              Requester(CHANNEL, f"{name}:backchannel-logout", source), block_device=False)
        finally:  # the person's other sessions end even when holding the certificates failed
            sessions = person_signed_out(self.dep, UserIdentity(p.issuer, sub, name)) if isinstance(sub, str) else 0
        log.info("back-channel logout from %s: %d certificate(s) %s, %d console session(s) ended", name, len(done),
                 "held" if p.logout_action == "hold" else "revoked", sessions)
        return done
