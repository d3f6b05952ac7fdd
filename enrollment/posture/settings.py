"""Posture settings: section ``posture:`` of ikepki.yaml, overridable by ``IKEPKI_POSTURE_*``."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings


class PostureSettings(IkepkiSettings):
    """Posture is off (device certificates carry no posture) until ``policy`` names a policy file."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_POSTURE_")

    policy: str | None = None  # posture policy YAML (enrollment.posture.policy), reloaded on change
    nonce_ttl_seconds: int = 300  # a quote must answer a nonce younger than this
    issue_window_seconds: int = 600  # a device certificate needs evidence verified at most this long ago
