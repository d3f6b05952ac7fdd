"""The AK certificate: issuance (attestation CA) and profile check (verifier).

Profile (TCG EK Credential Profile §3.2 fields applied to AKs as required by WebAuthn L2 §8.3.1
"TPM Attestation Statement Certificate Requirements"): X.509 v3, empty subject allowed, SAN
**critical** with a dirName {tcg-at-tpmManufacturer, tpmModel, tpmVersion} (EK profile §3.2.9),
EKU ``tcg-kp-AIKCertificate`` 2.23.133.8.3, basicConstraints CA:false, keyUsage digitalSignature.
ikepki adds to the same SAN the RFC 4043 PermanentIdentifier and RFC 4108 HardwareModuleName derived
from the EK (see :mod:`ca.device_identity`), so that an attestation statement carries
the device identifier as draft-ietf-acme-device-attest-09 §5 step 3 requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.device_identity import (
    ID_ON_HARDWARE_MODULE_NAME,
    ID_ON_PERMANENT_IDENTIFIER,
    HardwareModuleName,
    PermanentIdentifier,
    TpmDescription,
)
from ca.model import IssuedCertificate, Requester
from ca.profiles import EKU_TCG_AIK_CERTIFICATE
from enrollment.attestation.credential import ActivatedAk
from enrollment.attestation.ek import OID_TPM_MANUFACTURER, OID_TPM_MODEL, OID_TPM_VERSION, tpm_description
from enrollment.attestation.errors import AttestationError, Reason

OID_TCG_KP_AIK_CERTIFICATE = EKU_TCG_AIK_CERTIFICATE
AK_PROFILE = "attestation-ak"


@dataclass(frozen=True)
class AkCertificateInfo:
    """What a verifier learns from a profile-conformant AK certificate."""

    certificate: x509.Certificate
    permanent_identifier: PermanentIdentifier
    hardware_module: HardwareModuleName
    tpm: TpmDescription | None


def ak_subject_alt_names(activated: ActivatedAk) -> list[x509.GeneralName]:
    """The AK certificate's SAN: TPM dirName (EK profile §3.2.9), PermanentIdentifier, HardwareModuleName."""
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
    return names


class AkIssuer(Protocol):
    """What AK issuance needs from the core: :meth:`ca.authority.Authority.issue_internal`."""

    def issue_internal(self, profile_name: str, public_key: CertificatePublicKeyTypes, subject: x509.Name,
                       sans: Sequence[x509.GeneralName] = (), lifetime: timedelta | None = None,
                       requester: Requester | None = None, *, issuer: str | None = None,
                       device_id: str | None = None, ek_fingerprint: str | None = None) -> IssuedCertificate: ...


def issue_ak_certificate(authority: AkIssuer, activated: ActivatedAk, requester: Requester,
                         validity: timedelta | None = None) -> IssuedCertificate:
    """Issue the AK certificate through the Authority (profile ``attestation-ak``: the attestation CA in the
    HSM, serial, lint, store row and audit line like every other certificate). Empty subject, so the SAN is
    critical (RFC 5280 §4.2.1.6)."""
    public_key = activated.ak_public_key
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise AttestationError(Reason.AK_PROFILE, "the AK is neither an RSA nor an ECC key")
    return authority.issue_internal(
        AK_PROFILE, public_key, x509.Name([]), ak_subject_alt_names(activated), validity, requester,
        device_id=activated.ek.permanent_identifier.acme_value(), ek_fingerprint=activated.ek.fingerprint)


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
