"""Endorsement-key certificate validation and the EK public area used for MakeCredential.

References: TCG EK Credential Profile for TPM Family 2.0 (rev. 2.x) §2.2.1 (NV indices and EK
templates: RSA-2048 L-1 at 0x01C00002, ECC P-384 H-3 at 0x01C00016, ...) and §3.2 (certificate
fields: EKU ``tcg-kp-EKCertificate`` 2.23.133.8.1, SAN dirName with ``tcg-at-tpmManufacturer``
2.23.133.2.1, ``tcg-at-tpmModel`` .2.2, ``tcg-at-tpmVersion`` .2.3, §3.2.9; the SAN is critical
when the subject is empty).  Identifier derivation: :mod:`ca.device_identity`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from tpm2_pytss.internal.templates import ek_template
from tpm2_pytss.types import TPMT_PUBLIC

from ca.device_identity import (
    HardwareModuleName,
    PermanentIdentifier,
    TpmDescription,
    spki_sha256_hex,
)
from enrollment.attestation.chain import (
    ChainError,
    is_self_issued,
    load_der_certificate,
    load_pem_directory,
    validate_path,
)
from enrollment.attestation.clock import require_aware
from enrollment.attestation.errors import AttestationError, Reason

EK_ROOTS_SETTING = "IKEPKI_ATTESTATION_EK_ROOTS"
OID_TCG_KP_EK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.1")
OID_TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
OID_TPM_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
OID_TPM_VERSION = x509.ObjectIdentifier("2.23.133.2.3")
_EC_TEMPLATES = {
    "secp256r1": ("EK-ECC256", 32),
    "secp384r1": ("EK-HIGH-ECC384", 48),
    "secp521r1": ("EK-HIGH-ECC521", 66),
}
_RSA_TEMPLATES = {2048: "EK-RSA2048", 3072: "EK-HIGH-RSA3072", 4096: "EK-HIGH-RSA4096"}


@dataclass(frozen=True)
class EkTrustStore:
    """Manufacturer roots (self-signed anchors) and intermediates, e.g. swtpm-localca root + issuer."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_certificates(cls, certs: tuple[x509.Certificate, ...]) -> EkTrustStore:
        """Split into anchors (self-issued) and intermediates."""
        roots = tuple(c for c in certs if is_self_issued(c))
        return cls(roots, tuple(c for c in certs if c not in roots))

    @classmethod
    def from_directory(cls, path: Path) -> EkTrustStore:
        """Load every PEM certificate in ``path``."""
        return cls.from_certificates(load_pem_directory(path))

    @classmethod
    def from_environment(cls) -> EkTrustStore:
        """Load the directory named by ``IKEPKI_ATTESTATION_EK_ROOTS``."""
        value = os.environ.get(EK_ROOTS_SETTING)
        if not value:
            raise RuntimeError(f"{EK_ROOTS_SETTING} is not set")
        return cls.from_directory(Path(value))


@dataclass(frozen=True)
class EkIdentity:
    """A validated EK: its certificate, key and the identifiers derived from it."""

    certificate: x509.Certificate
    public_key: PublicKeyTypes
    fingerprint: str  # hex SHA-256 of the EK SPKI
    permanent_identifier: PermanentIdentifier
    hardware_module: HardwareModuleName
    tpm: TpmDescription | None


def _fail(reason: Reason, detail: str) -> AttestationError:
    return AttestationError(reason, detail)


def _check_key(key: PublicKeyTypes) -> None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in _RSA_TEMPLATES:
        return
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_TEMPLATES:
        return
    raise _fail(Reason.EK_PROFILE, "EK key is not RSA-2048/3072/4096 or NIST P-256/384/521")


def _check_eku(cert: x509.Certificate, require_eku: bool) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        if require_eku:
            raise _fail(Reason.EK_PROFILE, "EK certificate has no extendedKeyUsage") from None
        return
    if OID_TCG_KP_EK_CERTIFICATE not in eku:
        raise _fail(Reason.EK_PROFILE, "EK certificate EKU lacks tcg-kp-EKCertificate 2.23.133.8.1")


def _check_not_ca(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if bc.ca:
        raise _fail(Reason.EK_PROFILE, "EK certificate is a CA certificate")


def tpm_description(cert: x509.Certificate) -> TpmDescription | None:
    """TPM manufacturer/model/version from the SAN dirName, if present (EK profile §3.2.9)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for name in san.get_values_for_type(x509.DirectoryName):
        values = {}
        for attr in name:
            if attr.oid in (OID_TPM_MANUFACTURER, OID_TPM_MODEL, OID_TPM_VERSION):
                values[attr.oid] = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
        if OID_TPM_MANUFACTURER in values:
            return TpmDescription(
                values[OID_TPM_MANUFACTURER], values.get(OID_TPM_MODEL, ""), values.get(OID_TPM_VERSION, "")
            )
    return None


def validate_ek_certificate(
    cert_der: bytes, trust: EkTrustStore, now: datetime, *, require_eku: bool = True
) -> EkIdentity:
    """Validate an EK certificate against the manufacturer trust store and derive the identity.

    Raises :class:`AttestationError` with ``untrusted-ek`` (path) or ``ek-profile`` (contents).
    """
    try:
        cert = load_der_certificate(cert_der, strict_serial=False)
        validate_path(cert, trust.intermediates, trust.roots, require_aware(now))
    except ChainError as exc:
        raise _fail(Reason.UNTRUSTED_EK, str(exc)) from exc
    key = cert.public_key()
    _check_key(key)
    _check_eku(cert, require_eku)
    _check_not_ca(cert)
    return EkIdentity(
        certificate=cert,
        public_key=key,
        fingerprint=spki_sha256_hex(key),
        permanent_identifier=PermanentIdentifier.from_ek(key),
        hardware_module=HardwareModuleName.from_ek(key),
        tpm=tpm_description(cert),
    )


def ek_public_area(key: PublicKeyTypes) -> TPMT_PUBLIC:
    """The EK TPMT_PUBLIC for a certified EK key (EK profile §2.2.1 templates, unique = the key).

    RSA-2048 → L-1 template (identical nameAlg/symmetric to H-1), P-256 → L-2, P-384 → H-3, ...
    Only nameAlg, symmetric and the key enter MakeCredential, so low/high attributes do not matter.
    """
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in _RSA_TEMPLATES:
        area = _template(_RSA_TEMPLATES[key.key_size])
        area.unique.rsa = key.public_numbers().n.to_bytes(key.key_size // 8, "big")
        return area
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_TEMPLATES:
        name, size = _EC_TEMPLATES[key.curve.name]
        area = _template(name)
        numbers = key.public_numbers()
        area.unique.ecc.x = numbers.x.to_bytes(size, "big")
        area.unique.ecc.y = numbers.y.to_bytes(size, "big")
        return area
    raise _fail(Reason.EK_PROFILE, "unsupported EK key type")


def _template(name: str) -> TPMT_PUBLIC:
    template = ek_template.lookup(name)
    if template is None:  # pragma: no cover - tpm2-pytss ships all of them
        raise _fail(Reason.EK_PROFILE, f"no EK template {name}")
    area, _ = TPMT_PUBLIC.unmarshal(template.template.publicArea.marshal())  # a private copy
    return area
