"""Bounded parsing of TPM 2.0 structures with tpm2-pytss, and the checks on them.

TPM 2.0 Library Part 2: §12.2.4 TPMT_PUBLIC, §10.12.12 TPMS_ATTEST, §8.3 TPMA_OBJECT,
§6.2 TPM_GENERATED_VALUE, §6.9 TPM_ST_ATTEST_CERTIFY; Part 1 §16 (object names:
``nameAlg || H_nameAlg(TPMT_PUBLIC)``).
"""

from __future__ import annotations

from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from tpm2_pytss.constants import TPM2_ALG, TPM2_ECC, TPMA_OBJECT
from tpm2_pytss.internal.crypto import public_to_key
from tpm2_pytss.types import TPMS_ATTEST, TPMT_PUBLIC

from enrollment.attestation.errors import AttestationError, Reason

MAX_PUBLIC_AREA = 1024  # TPMT_PUBLIC of an RSA-4096 key with a SHA-512 policy is < 700 bytes
MAX_CERT_INFO = 1024  # TPMS_ATTEST for certify: two names + extraData(<=64) + clock/firmware
NAME_ALGORITHMS = frozenset({TPM2_ALG.SHA256, TPM2_ALG.SHA384, TPM2_ALG.SHA512})
_CURVES = frozenset({TPM2_ECC.NIST_P256, TPM2_ECC.NIST_P384, TPM2_ECC.NIST_P521})

# Attributes that make a key non-exportable and TPM-generated (Part 1 §27.1, Part 2 §8.3.2).
RESIDENT_KEY_ATTRIBUTES = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
# An attestation key is additionally a restricted signing key (Part 1 §25.2 restricted signing keys).
AK_ATTRIBUTES = RESIDENT_KEY_ATTRIBUTES | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT

_T = TypeVar("_T", TPMT_PUBLIC, TPMS_ATTEST)


def _unmarshal_exact(cls: type[_T], data: object, bound: int, what: str) -> _T:
    if not isinstance(data, bytes) or not 0 < len(data) <= bound:
        raise AttestationError(Reason.MALFORMED, f"{what} missing or larger than {bound} bytes")
    try:
        value, used = cls.unmarshal(data)
    except Exception as exc:  # tpm2-pytss raises TSS2_Exception (RuntimeError) and others
        raise AttestationError(Reason.MALFORMED, f"{what} does not unmarshal: {exc}") from exc
    if used != len(data):
        raise AttestationError(Reason.MALFORMED, f"{what} has {len(data) - used} trailing bytes")
    return value


def parse_public_area(data: object) -> TPMT_PUBLIC:
    """Unmarshal a complete TPMT_PUBLIC (WebAuthn ``pubArea``), no trailing bytes."""
    return _unmarshal_exact(TPMT_PUBLIC, data, MAX_PUBLIC_AREA, "pubArea")


def parse_attest(data: object) -> TPMS_ATTEST:
    """Unmarshal a complete TPMS_ATTEST (WebAuthn ``certInfo``), no trailing bytes."""
    return _unmarshal_exact(TPMS_ATTEST, data, MAX_CERT_INFO, "certInfo")


def object_name(area: TPMT_PUBLIC) -> bytes:
    """The TPM object name ``nameAlg || H(TPMT_PUBLIC)`` (Part 1 §16)."""
    if area.nameAlg not in NAME_ALGORITHMS:
        raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, f"nameAlg {area.nameAlg} not allowed")
    return bytes(area.get_name())


def public_key_of(area: TPMT_PUBLIC) -> PublicKeyTypes:
    """The cryptography public key of an RSA (>= 2048) or NIST-curve ECC public area."""
    if area.type == TPM2_ALG.ECC and area.parameters.eccDetail.curveID not in _CURVES:
        raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, "curve not allowed")
    if area.type not in (TPM2_ALG.ECC, TPM2_ALG.RSA):
        raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, f"key type {area.type} not allowed")
    try:
        key = public_to_key(area)
    except Exception as exc:  # invalid point, bad modulus, ...
        raise AttestationError(Reason.MALFORMED, f"public area key is invalid: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, "RSA key shorter than 2048 bits")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, "unsupported key type")
    return key


def has_attributes(area: TPMT_PUBLIC, required: TPMA_OBJECT) -> bool:
    """True when every bit of ``required`` is set in ``objectAttributes``."""
    return (int(area.objectAttributes) & int(required)) == int(required)


def check_ak_public(area: TPMT_PUBLIC) -> None:
    """An AK must be a TPM-resident *restricted signing* key (Part 1 §25.2; TCG AK profile).

    Required: fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign; forbidden: decrypt.
    """
    if not has_attributes(area, AK_ATTRIBUTES):
        raise AttestationError(
            Reason.AK_ATTRIBUTES,
            f"AK attributes {area.objectAttributes} lack fixedTPM/fixedParent/sensitiveDataOrigin/restricted/sign",
        )
    if int(area.objectAttributes) & int(TPMA_OBJECT.DECRYPT):
        raise AttestationError(Reason.AK_ATTRIBUTES, "AK must not be a decryption key")
    object_name(area)
    public_key_of(area)
