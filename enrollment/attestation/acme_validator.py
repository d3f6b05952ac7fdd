"""``device-attest-01`` validator for the ACME server (plug-in of :mod:`enrollment.acme.challenges`).

draft-ietf-acme-device-attest-09 §5: the server constructs the key authorization from the challenge
token and the account key, verifies the attestation object (here: fmt "tpm",
:func:`enrollment.attestation.tpm_statement.verify_tpm_attestation`) and checks that the attested
device identifier equals the order identifier (``permanent-identifier`` §3 / ``hardware-module`` §4).
Any failure is a ``badAttestationStatement`` problem whose detail starts with the machine-readable
reason.  The CSR does not exist yet at validation time, so the attested key travels in the evidence
(``attested_spki``) and the ACME server checks the CSR key against it at finalize
(:func:`ca.device_identity.attested_key_matches`, the same check as :func:`check_csr_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ca.device_identity import (
    HARDWARE_MODULE,
    PERMANENT_IDENTIFIER,
    attested_key_matches,
    device_general_name,
    parse_device_identifier,
    spki_b64,
)
from ca.errors import PKIError
from ca.ports import ServiceKeys
from enrollment.acme.challenges import ValidationResult, key_authorization
from enrollment.acme.model import Account, Authz, Challenge
from enrollment.attestation.chain import is_self_issued
from enrollment.attestation.clock import Clock
from enrollment.attestation.errors import AttestationError, Reason
from enrollment.attestation.settings import AttestationSettings, load_certificates
from enrollment.attestation.tpm_statement import AttestationResult, decode_att_obj, verify_tpm_attestation

PROBLEM = "badAttestationStatement"
parse_identifier = parse_device_identifier  # the ACME identifier forms live in the core rule book
acme_general_name = device_general_name


def attestation_evidence(result: AttestationResult) -> dict[str, Any]:
    """JSON-safe evidence stored on the authorization (keys read by finalize / IssuanceRequest;
    ``attested_spki`` is what the ACME server compares the CSR key with, see :func:`check_csr_key`)."""
    return {
        "device_id": result.permanent_identifier.acme_value(),
        "hardware_module": result.hardware_module.acme_value(),
        "ek_fingerprint": result.ek_fingerprint,
        "ak_cert_serial": format(result.ak_cert_serial, "x"),
        "attested_spki": spki_b64(result.device_public_key),
        "tpm": None if result.tpm is None else [result.tpm.manufacturer, result.tpm.model, result.tpm.version],
    }


def check_csr_key(evidence: dict[str, Any], csr_public_key: PublicKeyTypes) -> None:
    """Finalize-time check: the CSR key is the attested TPM key (raises ``key-mismatch``)."""
    if not isinstance(evidence.get("attested_spki"), str):
        raise AttestationError(Reason.KEY_MISMATCH, "authorization carries no attested key")
    if not attested_key_matches(evidence["attested_spki"], csr_public_key):
        raise AttestationError(Reason.KEY_MISMATCH, "CSR public key is not the attested TPM key")


class DeviceAttest01Validator:
    """Implements the ``ChallengeValidator`` protocol of :mod:`enrollment.acme.challenges`."""

    type = "device-attest-01"
    identifier_types = frozenset({PERMANENT_IDENTIFIER, HARDWARE_MODULE})

    def __init__(
        self,
        attestation_roots: Sequence[x509.Certificate],
        clock: Clock,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> None:
        self._roots = tuple(attestation_roots)
        self._intermediates = tuple(intermediates)
        self._clock = clock

    def applies(self, authz: Authz) -> bool:
        """Offered for every device identifier."""
        return authz.identifier.type in self.identifier_types

    def validate(
        self, challenge: Challenge, authz: Authz, account: Account, payload: dict[str, Any]
    ) -> ValidationResult:
        """Never raises: every failure becomes a badAttestationStatement result."""
        try:
            expected = parse_identifier(authz.identifier.type, authz.identifier.value)
        except (ValueError, UnicodeError) as exc:
            return ValidationResult.failure("malformed", f"device identifier: {exc}")
        try:
            result = verify_tpm_attestation(
                decode_att_obj(payload.get("attObj")),  # type: ignore[arg-type]
                key_authorization=key_authorization(challenge.token, account),
                csr_public_key=None,
                attestation_roots=self._roots,
                intermediates=self._intermediates,
                now=self._clock.now(),
                expected_identifier=expected,
            )
        except AttestationError as exc:
            return ValidationResult.failure(PROBLEM, f"{exc.reason.value}: {exc.detail}")
        return ValidationResult.success(evidence=attestation_evidence(result))


def deployment_attestation_ca(deployment: ServiceKeys) -> x509.Certificate | None:
    """The deployment's own attestation issuing CA certificate (from the manifest, no HSM access)."""
    try:
        entry = deployment.manifest["issuers"]["attestation"]
        return x509.load_pem_x509_certificate(deployment.path(entry["cert"]).read_bytes())
    except (OSError, KeyError, TypeError, ValueError, PKIError):
        return None


def acme_validators(deployment: ServiceKeys) -> list[DeviceAttest01Validator]:
    """Entry point called by :func:`enrollment.acme.routes.build_registry`.

    Trust anchors: ``attestation.ak_ca_certs`` when set, else the deployment's attestation issuer itself
    (anchored at the intermediate, so no other certificate under the root can pose as an AK certificate);
    [] when neither exists.
    """
    settings = deployment.settings_for(AttestationSettings, "attestation")
    if not settings.ak_ca_certs:
        own = deployment_attestation_ca(deployment)
        return [] if own is None else [DeviceAttest01Validator([own], deployment.clock)]
    certs = load_certificates(deployment.path(settings.ak_ca_certs))
    roots = [c for c in certs if is_self_issued(c)]
    return [DeviceAttest01Validator(roots, deployment.clock, [c for c in certs if c not in roots])]
