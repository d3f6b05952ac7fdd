"""Admin API settings (section ``admin:`` of ikepki.yaml, env ``IKEPKI_ADMIN_…``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings


class AdminSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_ADMIN_")

    # certificate profile -> client certificate subject (RFC 4514, as cryptography prints it) -> role
    # (viewer, revoker, admin); a certificate of another profile with the same subject gets no role
    cert_roles: dict[str, dict[str, str]] = {}
    max_body_bytes: int = 2 * 1024 * 1024
    max_serials: int = 10_000  # per revocation request (the CLI sends bulk in chunks)
    max_targets: int = 100_000  # selected by device / identity / profile
