"""Push worker settings (section ``push:`` of ikepki.yaml, env ``IKEPKI_PUSH_…``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings


class PushSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_PUSH_")

    enabled: bool = True
    poll_interval_ms: float = 10.0  # change probe interval (SQLite: a stat of the DB files, no query)
    idle_query_ms: float = 250.0  # query anyway this often (retries coming due, other writers)
    lease_seconds: float = 30.0  # a claimed delivery is retried by anyone after this
    backoff_base_seconds: float = 0.25  # first retry delay; doubles per attempt
    backoff_max_seconds: float = 5.0  # cap, so a gateway that returns is caught up quickly
    batch: int = 500  # deliveries claimed per gateway per round
    timeout_seconds: float = 5.0  # per driver call (HTTP request, VICI command)
    crl: str = "auto"  # VICI driver: "http" (fetch the published CRL), "local" (build from store), "auto", "none"
    crl_next_update_minutes: int = 10  # nextUpdate of a locally built CRL
    verify_tls: bool = True  # webhook/responder over https: verify with the system and ikepki roots
