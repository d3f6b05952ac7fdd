"""Console settings (section ``console:`` of ikepki.yaml, env ``IKEPKI_CONSOLE_…``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings


class ConsoleSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_CONSOLE_")

    enabled: bool = True
    idle_timeout_seconds: int = Field(default=900, ge=30, le=8 * 3600)  # signed out after this long idle
    max_session_seconds: int = Field(default=8 * 3600, ge=60, le=24 * 3600)  # and after this long at all
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024)
    max_targets: int = Field(default=10_000, ge=1, le=100_000)  # certificates one console revocation may hit
