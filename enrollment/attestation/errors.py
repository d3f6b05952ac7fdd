"""One error type for every attestation failure, with a machine-readable reason.

The ACME layer maps an :class:`AttestationError` to a ``badAttestationStatement`` problem
document (draft-ietf-acme-device-attest-09 §5 and §9.3) and puts ``reason`` / ``detail`` into it.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an attestation step failed (stable strings: the ACME layer and logs rely on them)."""

    MALFORMED = "malformed"  # undecodable or oversized input (CBOR, DER, TPM structure)
    UNSUPPORTED_FORMAT = "unsupported-format"  # attObj fmt other than "tpm", or ver other than "2.0"
    UNTRUSTED_EK = "untrusted-ek"  # EK certificate does not chain to a configured manufacturer root
    EK_PROFILE = "ek-profile"  # EK certificate violates the TCG EK credential profile
    AK_ATTRIBUTES = "ak-attributes"  # AK TPMT_PUBLIC is not a fixedTPM restricted signing key
    KEY_ATTRIBUTES = "key-attributes"  # certified key is not fixedTPM/fixedParent/sensitiveDataOrigin
    UNTRUSTED_AK = "untrusted-ak"  # x5c does not chain to a configured attestation CA
    AK_PROFILE = "ak-profile"  # AK certificate violates the TCG/WebAuthn AK certificate profile
    WRONG_SECRET = "wrong-secret"  # noqa: S105 - a reason code, not a password
    UNKNOWN_CHALLENGE = "unknown-challenge"
    EXPIRED = "expired"
    REPLAY = "replay"  # single-use challenge already consumed
    BAD_ATTEST = "bad-attest"  # certInfo magic/type wrong
    EXTRADATA_MISMATCH = "extradata-mismatch"
    NAME_MISMATCH = "name-mismatch"
    KEY_MISMATCH = "key-mismatch"
    BAD_SIGNATURE = "bad-signature"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    IDENTIFIER_MISMATCH = "identifier-mismatch"


class AttestationError(Exception):
    """An attestation check failed; ``reason`` is machine-readable, ``detail`` is for humans."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
