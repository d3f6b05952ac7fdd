"""The AK certificate: issuance (attestation CA) and profile check (verifier).

Profile (TCG EK Credential Profile §3.2 fields applied to AKs as required by WebAuthn L2 §8.3.1
"TPM Attestation Statement Certificate Requirements"): X.509 v3, empty subject allowed, SAN
**critical** with a dirName {tcg-at-tpmManufacturer, tpmModel, tpmVersion} (EK profile §3.2.9),
EKU ``tcg-kp-AIKCertificate`` 2.23.133.8.3, basicConstraints CA:false, keyUsage digitalSignature.
ikepki adds to the same SAN the RFC 4043 PermanentIdentifier and RFC 4108 HardwareModuleName derived
from the EK (see :mod:`enrollment.attestation.identity`), so that an attestation statement carries
the device identifier as draft-ietf-acme-device-attest-09 §5 step 3 requires.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from enrollment.attestation.clock import require_aware
from enrollment.attestation.credential import ActivatedAk
from enrollment.attestation.ek import OID_TPM_MANUFACTURER, OID_TPM_MODEL, OID_TPM_VERSION, tpm_description
from enrollment.attestation.errors import AttestationError, Reason
from enrollment.attestation.identity import (
    ID_ON_HARDWARE_MODULE_NAME,
    ID_ON_PERMANENT_IDENTIFIER,
    HardwareModuleName,
    PermanentIdentifier,
    TpmDescription,
)

OID_TCG_KP_AIK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.3")
DEFAULT_AK_VALIDITY = timedelta(days=365)
_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class AkCertificateInfo:
    """What a verifier learns from a profile-conformant AK certificate."""

    certificate: x509.Certificate
    permanent_identifier: PermanentIdentifier
    hardware_module: HardwareModuleName
    tpm: TpmDescription | None


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA256()
    return None  # Ed25519 / Ed448


def _san(activated: ActivatedAk) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    tpm = activated.ek.tpm
    if tpm is not None:
        attributes = [
            (OID_TPM_MANUFACTURER, tpm.manufacturer),
            (OID_TPM_MODEL, tpm.model),
            (OID_TPM_VERSION, tpm.version),
        ]
        rdns = [x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)]) for oid, value in attributes]
        names.append(x509.DirectoryName(x509.Name(rdns)))  # one attribute per RDN, as in swtpm's EK certs
    names.append(activated.ek.permanent_identifier.to_other_name())
    names.append(activated.ek.hardware_module.to_other_name())
    return x509.SubjectAlternativeName(names)


def issue_ak_certificate(
    activated: ActivatedAk,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    issuer_cert: x509.Certificate,
    now: datetime,
    validity: timedelta = DEFAULT_AK_VALIDITY,
) -> x509.Certificate:
    """Sign an AK certificate for an activated AK (the HSM adapter key works as ``issuer_key``)."""
    now = require_aware(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(activated.ak_public_key)  # type: ignore[arg-type]
        .serial_number(secrets.randbits(159) | 1 << 158)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + validity, issuer_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([OID_TCG_KP_AIK_CERTIFICATE]), critical=False)
        .add_extension(_san(activated), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(activated.ak_public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    return builder.sign(issuer_key, _hash_for(issuer_key))


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        raise AttestationError(Reason.AK_PROFILE, f"AK certificate lacks {cls.__name__}") from None
    except ValueError as exc:  # duplicate or undecodable extension
        raise AttestationError(Reason.AK_PROFILE, f"AK certificate extensions: {exc}") from exc


def _identifiers(san: x509.SubjectAlternativeName) -> tuple[PermanentIdentifier, HardwareModuleName]:
    permanent = [n for n in san.get_values_for_type(x509.OtherName) if n.type_id == ID_ON_PERMANENT_IDENTIFIER]
    hardware = [n for n in san.get_values_for_type(x509.OtherName) if n.type_id == ID_ON_HARDWARE_MODULE_NAME]
    if len(permanent) != 1 or len(hardware) != 1:
        raise AttestationError(Reason.AK_PROFILE, "AK SAN needs one PermanentIdentifier and one HardwareModuleName")
    try:
        return PermanentIdentifier.from_other_name(permanent[0]), HardwareModuleName.from_other_name(hardware[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise AttestationError(Reason.AK_PROFILE, f"AK SAN identifiers do not decode: {exc}") from exc


def check_ak_certificate(cert: x509.Certificate) -> AkCertificateInfo:
    """Check the AK certificate profile (WebAuthn L2 §8.3.1) and extract the device identity."""
    if cert.version != x509.Version.v3:
        raise AttestationError(Reason.AK_PROFILE, "AK certificate is not X.509 v3")
    bc = _ext(cert, x509.BasicConstraints).value
    if not isinstance(bc, x509.BasicConstraints) or bc.ca:
        raise AttestationError(Reason.AK_PROFILE, "AK certificate must have basicConstraints CA:false")
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    if not isinstance(eku, x509.ExtendedKeyUsage) or OID_TCG_KP_AIK_CERTIFICATE not in eku:
        raise AttestationError(Reason.AK_PROFILE, "AK certificate EKU lacks tcg-kp-AIKCertificate 2.23.133.8.3")
    san_ext = _ext(cert, x509.SubjectAlternativeName)
    if len(cert.subject) == 0 and not san_ext.critical:
        raise AttestationError(Reason.AK_PROFILE, "empty subject requires a critical SAN (RFC 5280 §4.2.1.6)")
    san = san_ext.value
    assert isinstance(san, x509.SubjectAlternativeName)
    permanent, hardware = _identifiers(san)
    return AkCertificateInfo(cert, permanent, hardware, tpm_description(cert))
