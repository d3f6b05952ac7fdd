"""Attestation settings: section ``attestation:`` of ikepki.yaml, overridable by ``IKEPKI_ATTESTATION_*``."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings
from enrollment.attestation.chain import load_pem_directory


class AttestationSettings(IkepkiSettings):
    """Where the two trust anchors of device attestation live."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_ATTESTATION_")

    ek_roots: str | None = None  # directory of TPM manufacturer roots + intermediates (PEM)
    ak_ca_certs: str | None = None  # PEM file or directory: attestation CA(s) that sign AK certificates
    ak_validity_days: int = 7  # short-lived AK certificates: devices re-run credential activation to renew
    credential_ttl_seconds: int = 300
    require_eab: bool = True  # /attest/v1/ak/start needs an ACME EAB key id + HMAC (enrollment.attestation.routes)


def load_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """Certificates from one PEM file or from every PEM file of a directory."""
    if path.is_dir():
        return load_pem_directory(path)
    return tuple(x509.load_pem_x509_certificates(path.read_bytes()))
