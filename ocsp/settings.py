"""Settings of the OCSP responder (section ``ocsp:``) and the CRL publisher (section ``crl:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings


class OcspSettings(IkepkiSettings):
    """``ocsp:`` in ikepki.yaml; environment ``IKEPKI_OCSP_<KEY>``."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_OCSP_")

    validity_seconds: int = Field(3600, ge=60, le=7 * 86400)  # nextUpdate - thisUpdate of every response
    bucket_seconds: int = Field(60, ge=1, le=3600)  # thisUpdate is rounded down to this (replicas agree)
    max_requests: int = Field(32, ge=1, le=256)  # CertIDs per OCSPRequest, more -> malformedRequest
    max_body_bytes: int = Field(16384, ge=512, le=65536)
    # a serial this CA never issued: "unknown" (RFC 6960 §2.2), "revoked" (§2.2 extended revoked) or
    # "unauthorized" (§2.3 / RFC 5019 §2.2.3: the unsigned error, no signature spent, nothing cached)
    non_issued: Literal["unknown", "revoked", "unauthorized"] = "unknown"
    cache_entries: int = Field(500_000, ge=100)  # pre-signed responses kept in memory per worker ...
    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)  # ... and at most this many bytes (also
    # the bound of the responses the workers of one service share on disk: ocsp/shared_presigned.py)
    poll_seconds: float = Field(0.5, ge=0.05, le=60)  # revocation feed poll interval
    signer_rotate_before_hours: float = Field(24, gt=0)  # re-issue the delegated signer cert this early
    signer_check_seconds: float = Field(60, ge=1)  # how often the rotation task looks


class CrlSettings(IkepkiSettings):
    """``crl:`` in ikepki.yaml; environment ``IKEPKI_CRL_<KEY>``."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_CRL_")

    full_validity_hours: float = Field(24, gt=0)  # nextUpdate of full CRLs
    full_interval_hours: float = Field(6, gt=0)  # scheduled full CRL (and new delta base) this often
    delta_validity_hours: float = Field(1, gt=0)
    delta_interval_minutes: float = Field(20, gt=0)
    root_validity_days: float = Field(7, gt=0)
    full_on_revocation: bool = True  # also re-issue the full CRL on revocation (cheap: entry DER cached)
    debounce_seconds: float = Field(0.5, ge=0, le=10)
    poll_seconds: float = Field(0.5, ge=0.05, le=60)
    lease_seconds: float = Field(30, ge=5)
    keep_history: int = Field(10, ge=2)  # published CRLs kept per issuer and kind
