"""OIDC settings: section ``oidc:`` of ikepki.yaml (environment ``IKEPKI_OIDC_…``).

Example::

    oidc:
      providers:
        corp:
          issuer: https://login.example.com/tenant/v2.0
          client_ids: [ikepki-vpn]            # accepted ``aud`` values
          device_client_id: ikepki-vpn        # what ``ikepki user enroll`` uses (public client)
          algorithms: [RS256, ES256]
          groups_claim: groups
          group_roles: {vpn-staff: staff, vpn-contractors: contractors}
          allowed_email_domains: [example.com]
          max_lifetime_hours: 8
          max_session_hours: 12               # never beyond auth_time + this
          logout_action: hold                 # or revoke
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings

ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                             "EdDSA"})
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """https, or http on a loopback address only (a provider in a test or a sidecar)."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
        raise ValueError(f"{what} must be an https URL (http only on loopback)")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} has no query or fragment (OpenID Connect Core §2)")
    return url


class ProviderSettings(BaseModel):
    """One OpenID Provider (OpenID Connect Discovery 1.0 §4 from ``issuer``)."""

    model_config = {"extra": "forbid"}
    issuer: str = Field(max_length=255)
    discovery_url: str | None = None  # default: <issuer>/.well-known/openid-configuration
    client_ids: list[str] = Field(min_length=1, max_length=16)  # accepted ``aud`` values
    device_client_id: str | None = None  # public client for the RFC 8628 device grant (the CLI)
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile", "groups"])
    enabled: bool = True
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"], min_length=1)
    clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    max_token_age_seconds: int = Field(default=600, ge=30, le=86_400)  # now - iat of a redeemed ID token
    jwks_refresh_min_seconds: float = Field(default=30, ge=0, le=3600)  # unknown kid: refetch at most this often
    jwks_max_age_seconds: int = Field(default=3600, ge=60, le=86_400)
    email_claim: str = "email"  # the email SAN, only when ``email_verified`` is true
    require_email_verified: bool = True
    groups_claim: str = "groups"
    group_roles: dict[str, str] = Field(default_factory=dict)  # IdP group -> gateway-policy role (OU)
    require_role: bool = False  # refuse users none of whose groups maps to a role
    allowed_email_domains: list[str] = Field(default_factory=list)  # empty: any
    max_lifetime_hours: float = Field(default=8, gt=0, le=48)
    max_session_hours: float = Field(default=12, gt=0, le=24 * 30)  # from auth_time (or iat)
    profile: str = "user"
    logout_action: Literal["hold", "revoke"] = "hold"

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        return check_url(v, "issuer")

    @field_validator("discovery_url")
    @classmethod
    def _discovery(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, "discovery_url")

    @field_validator("algorithms")
    @classmethod
    def _algs(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ASYMMETRIC_ALGS]
        if bad:
            raise ValueError(f"algorithms {bad} not allowed: only asymmetric JWS algorithms (never none or HS*)")
        return v

    @field_validator("group_roles")
    @classmethod
    def _roles(cls, v: dict[str, str]) -> dict[str, str]:
        for role in v.values():
            if not role or len(role) > 64 or any(ch in role for ch in ',+"\\<>;='):
                raise ValueError(f"role {role[:70]!r}: 1-64 characters, no RFC 4514 specials")
        return v

    @model_validator(mode="after")
    def _domains(self) -> ProviderSettings:
        self.allowed_email_domains = [d.lower().lstrip("@") for d in self.allowed_email_domains]
        return self

    @property
    def discovery(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class OidcSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_OIDC_")

    enabled: bool = True
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=64 * 1024, ge=4096, le=1024 * 1024)
    max_token_bytes: int = Field(default=16 * 1024, ge=1024, le=256 * 1024)
    http_timeout_seconds: float = Field(default=5, gt=0, le=60)
