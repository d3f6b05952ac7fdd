"""Console settings (section ``console:`` of ikepki.yaml, env ``IKEPKI_CONSOLE_…``).

Sign-in through an identity provider (one of the ``oidc:`` section's providers)::

    console:
      oidc:
        provider: corp                                # a provider of the oidc: section
        client_id: ikepki-console                     # the console's registration (authorization code flow)
        client_secret_file: secrets/console-oidc.txt  # by reference; omit for a public client (PKCE only)
        group_roles: {pki-admins: admin, secops: revoker, helpdesk: viewer}
        # redirect_uri: https://pki.example.com/console/oidc/callback   (default: from the request's host)
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings

CONSOLE_ROLES = ("viewer", "revoker", "admin")


class ConsoleOidcSettings(BaseModel):
    model_config = {"extra": "forbid"}

    provider: str = Field(min_length=1, max_length=64)
    client_id: str = Field(min_length=1, max_length=255)
    client_secret_file: str | None = None  # relative to the deployment directory
    group_roles: dict[str, str] = Field(min_length=1)  # IdP group -> viewer | revoker | admin (the highest wins)
    redirect_uri: str | None = Field(default=None, max_length=1024)  # registered at the provider
    login_ttl_seconds: int = Field(default=600, ge=60, le=3600)  # from the redirect to the provider to the callback
    # a session from the provider ends after this long (at most console.max_session_seconds): the role
    # comes from the groups at sign-in, so a group change takes effect within this time
    session_max_seconds: int = Field(default=3600, ge=60, le=24 * 3600)

    @field_validator("group_roles")
    @classmethod
    def _roles(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted({r for r in v.values() if r not in CONSOLE_ROLES})
        if bad:
            raise ValueError(f"console roles are {', '.join(CONSOLE_ROLES)}, not {bad}")
        return v

    @field_validator("redirect_uri")
    @classmethod
    def _redirect(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("https://") or not v.endswith("/console/oidc/callback")):
            raise ValueError("redirect_uri is https://<host>/console/oidc/callback")
        return v


class ConsoleSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_CONSOLE_")

    enabled: bool = True
    idle_timeout_seconds: int = Field(default=900, ge=30, le=8 * 3600)  # signed out after this long idle
    max_session_seconds: int = Field(default=8 * 3600, ge=60, le=24 * 3600)  # and after this long at all
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024)
    max_targets: int = Field(default=10_000, ge=1, le=100_000)  # certificates one console revocation may hit
    oidc: ConsoleOidcSettings | None = None  # sign-in through an identity provider (besides admin tokens)
