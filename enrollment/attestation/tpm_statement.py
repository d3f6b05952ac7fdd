"""Verification of a WebAuthn ``tpm`` attestation statement inside an ACME ``device-attest-01`` attObj.

* draft-ietf-acme-device-attest-09 §5: the response carries ``attObj``, a WebAuthn attestation object
  (WebAuthn L2 §6.5.4: CBOR map ``{fmt, attStmt, authData}``; ``authData`` SHOULD be omitted).  The
  key authorization (RFC 8555 §8.1) *is* ``attToBeSigned`` and replaces ``authData || clientDataHash``.
* WebAuthn L2 §8.3 (TPM attestation statement format), verification procedure, applied with that
  substitution: ``ver`` = "2.0"; ``certInfo`` magic = TPM_GENERATED_VALUE, type = TPM_ST_ATTEST_CERTIFY;
  **``extraData`` = H_alg(key authorization)** where H_alg is the hash of the COSE ``alg``;
  ``attested.certify.name`` = name(``pubArea``); ``sig`` verifies over ``certInfo`` with the aikCert key;
  aikCert profile per §8.3.1; the ``pubArea`` key equals the key being certified (here: the CSR key).
* ikepki policy on top: the certified key must be fixedTPM | fixedParent | sensitiveDataOrigin and a
  signing key; the device identifier is taken from the AK certificate SAN
  (:mod:`enrollment.attestation.ak_cert`) and compared with the order identifier (draft §5 step 3).

``sig``: WebAuthn L2 §8.3 describes it as a TPMT_SIGNATURE (TPM 2.0 Part 2 §11.3.4), while deployed
clients (Windows, py_webauthn, SimpleWebAuthn) send the bare signature: DER ECDSA-Sig-Value or the
RSASSA/RSAPSS octets.  Both are accepted (a marshalled TPMT_SIGNATURE is recognised by exact length and
algorithm and converted; the forms cannot be confused); ikepki's device library sends the bare form.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss.constants import TPM2_ALG, TPM2_GENERATED, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.types import TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE

from ca.device_identity import (
    EK_SPKI_SHA256_ASSIGNER,
    HardwareModuleName,
    PermanentIdentifier,
    TpmDescription,
)
from enrollment.attestation.ak_cert import AkCertificateInfo, check_ak_certificate
from enrollment.attestation.chain import ChainError, load_der_certificate, validate_path
from enrollment.attestation.clock import Clock, require_aware
from enrollment.attestation.errors import AttestationError, Reason
from enrollment.attestation.repository import ChallengeRepository
from enrollment.attestation.tpm_structures import (
    RESIDENT_KEY_ATTRIBUTES,
    has_attributes,
    object_name,
    parse_attest,
    parse_public_area,
    public_key_of,
)

MAX_ATT_OBJ = 16384
MAX_X5C = 4
MAX_SIG = 1024
MAX_KEY_AUTHORIZATION = 512
DEFAULT_CHALLENGE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class CoseAlgorithm:
    """A COSE algorithm (RFC 9053 §2.1, RFC 8812 §2) usable for ``alg``."""

    ident: int
    hash: type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]
    family: str  # "ecdsa" | "pkcs1" | "pss"


COSE_ALGORITHMS = {
    -7: CoseAlgorithm(-7, hashes.SHA256, "ecdsa"),
    -35: CoseAlgorithm(-35, hashes.SHA384, "ecdsa"),
    -36: CoseAlgorithm(-36, hashes.SHA512, "ecdsa"),
    -257: CoseAlgorithm(-257, hashes.SHA256, "pkcs1"),
    -258: CoseAlgorithm(-258, hashes.SHA384, "pkcs1"),
    -259: CoseAlgorithm(-259, hashes.SHA512, "pkcs1"),
    -37: CoseAlgorithm(-37, hashes.SHA256, "pss"),
    -38: CoseAlgorithm(-38, hashes.SHA384, "pss"),
    -39: CoseAlgorithm(-39, hashes.SHA512, "pss"),
}


@dataclass(frozen=True)
class TpmStatement:
    """The decoded ``attStmt`` of fmt "tpm" (WebAuthn L2 §8.3 syntax)."""

    alg: int
    x5c: tuple[bytes, ...]
    sig: bytes
    cert_info: bytes
    pub_area: bytes


@dataclass(frozen=True)
class AttestationResult:
    """What a successful verification proves (input for ``IssuanceRequest``)."""

    permanent_identifier: PermanentIdentifier
    hardware_module: HardwareModuleName
    ek_fingerprint: str  # hex SHA-256 of the EK SPKI (= permanent identifier value for ikepki AKs)
    ak_cert_serial: int
    device_public_key: PublicKeyTypes
    tpm: TpmDescription | None


@dataclass(frozen=True)
class AttestationChallenge:
    """Single-use state of one device-attest-01 validation (id = ACME challenge id or token)."""

    id: str
    expected_identifier: PermanentIdentifier | HardwareModuleName | None
    created_at: datetime
    expires_at: datetime


def _malformed(detail: str) -> AttestationError:
    return AttestationError(Reason.MALFORMED, detail)


def decode_att_obj(value: str) -> bytes:
    """base64url (no padding, RFC 8555 §6.1 / RFC 4648 §5) → attObj bytes, bounded."""
    if not isinstance(value, str) or len(value) > MAX_ATT_OBJ * 4 // 3 + 4:
        raise _malformed("attObj missing or too large")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _malformed("attObj is not base64url") from exc


def _bytes_field(stmt: dict[Any, Any], key: str, bound: int) -> bytes:
    value = stmt.get(key)
    if not isinstance(value, bytes) or not 0 < len(value) <= bound:
        raise _malformed(f"attStmt.{key} must be 1..{bound} bytes")
    return value


def _decode_cbor(att_obj: bytes) -> dict[Any, Any]:
    if not isinstance(att_obj, bytes) or not 0 < len(att_obj) <= MAX_ATT_OBJ:
        raise _malformed(f"attObj missing or larger than {MAX_ATT_OBJ} bytes")
    try:
        decoded = cbor2.loads(att_obj)
    except Exception as exc:  # cbor2 raises CBORDecodeError, ValueError, RecursionError, ...
        raise _malformed(f"attObj is not CBOR: {type(exc).__name__}") from exc
    if not isinstance(decoded, dict):
        raise _malformed("attObj is not a CBOR map")
    return decoded


def parse_att_obj(att_obj: bytes) -> TpmStatement:
    """Decode and shape-check an attObj carrying a ``tpm`` statement (every size bounded)."""
    top = _decode_cbor(att_obj)
    if top.get("fmt") != "tpm":
        raise AttestationError(Reason.UNSUPPORTED_FORMAT, 'attObj fmt is not "tpm"')
    auth_data = top.get("authData", b"")
    if not isinstance(auth_data, bytes) or len(auth_data) > 1024:
        raise _malformed("authData must be bytes (and SHOULD be omitted)")
    stmt = top.get("attStmt")
    if not isinstance(stmt, dict):
        raise _malformed("attStmt is not a map")
    if stmt.get("ver") != "2.0":
        raise AttestationError(Reason.UNSUPPORTED_FORMAT, 'attStmt.ver is not "2.0"')
    alg = stmt.get("alg")
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise _malformed("attStmt.alg is not an integer")
    x5c = stmt.get("x5c")
    if not isinstance(x5c, list) or not 0 < len(x5c) <= MAX_X5C:
        raise _malformed(f"attStmt.x5c must hold 1..{MAX_X5C} certificates")
    if not all(isinstance(c, bytes) for c in x5c):
        raise _malformed("attStmt.x5c entries must be byte strings")
    return TpmStatement(
        alg=alg,
        x5c=tuple(x5c),
        sig=_bytes_field(stmt, "sig", MAX_SIG),
        cert_info=_bytes_field(stmt, "certInfo", 1024),
        pub_area=_bytes_field(stmt, "pubArea", 1024),
    )


def cose_algorithm(alg: int) -> CoseAlgorithm:
    """The supported COSE algorithm or ``unsupported-algorithm``."""
    found = COSE_ALGORITHMS.get(alg)
    if found is None:
        raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, f"COSE alg {alg} not supported")
    return found


def expected_extra_data(key_authorization: str, alg: int) -> bytes:
    """``extraData`` = H_alg(attToBeSigned), attToBeSigned = UTF-8 key authorization (draft-09 §5)."""
    if not isinstance(key_authorization, str) or not 0 < len(key_authorization) <= MAX_KEY_AUTHORIZATION:
        raise _malformed("key authorization missing or too long")
    try:
        encoded = key_authorization.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _malformed("key authorization is not valid UTF-8 text") from exc
    digest = hashes.Hash(cose_algorithm(alg).hash())
    digest.update(encoded)
    return digest.finalize()


def _verify_ak_chain(
    stmt: TpmStatement,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    now: datetime,
) -> AkCertificateInfo:
    try:
        certs = [load_der_certificate(der) for der in stmt.x5c]
        validate_path(certs[0], [*certs[1:], *intermediates], roots, now)
    except ChainError as exc:
        raise AttestationError(Reason.UNTRUSTED_AK, str(exc)) from exc
    try:
        return check_ak_certificate(certs[0])
    except (ValueError, x509.InvalidVersion) as exc:  # lazily decoded fields of a hostile certificate
        raise AttestationError(Reason.AK_PROFILE, f"AK certificate does not decode: {exc}") from exc


def _ak_public_key(info: AkCertificateInfo) -> PublicKeyTypes:
    try:
        return info.certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, "AK certificate key is not usable") from exc


_TPM_HASH = {hashes.SHA256: TPM2_ALG.SHA256, hashes.SHA384: TPM2_ALG.SHA384, hashes.SHA512: TPM2_ALG.SHA512}
_TPM_SIG_ALG = {"ecdsa": TPM2_ALG.ECDSA, "pkcs1": TPM2_ALG.RSASSA, "pss": TPM2_ALG.RSAPSS}


def bare_signature(sig: bytes, alg: CoseAlgorithm) -> bytes:
    """The bare signature: unwrap a marshalled TPMT_SIGNATURE of the expected scheme, else ``sig``."""
    try:
        parsed, used = TPMT_SIGNATURE.unmarshal(sig)
    except Exception:  # not a TPMT_SIGNATURE: the bare form
        return sig
    if used != len(sig) or parsed.sigAlg != _TPM_SIG_ALG[alg.family]:
        return sig
    if alg.family == "ecdsa":
        ecdsa = parsed.signature.ecdsa
        if ecdsa.hash != _TPM_HASH[alg.hash]:
            return sig
        r, s = int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(bytes(ecdsa.signatureS), "big")
        return encode_dss_signature(r, s)
    rsa_sig = parsed.signature.rsassa if alg.family == "pkcs1" else parsed.signature.rsapss
    return bytes(rsa_sig.sig) if rsa_sig.hash == _TPM_HASH[alg.hash] else sig


def _verify_signature(key: PublicKeyTypes, alg: CoseAlgorithm, signature: bytes, data: bytes) -> None:
    try:
        if alg.family == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(alg.hash()))
        elif alg.family == "pkcs1" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), alg.hash())
        elif alg.family == "pss" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PSS(padding.MGF1(alg.hash()), padding.PSS.AUTO), alg.hash())
        else:
            raise AttestationError(Reason.UNSUPPORTED_ALGORITHM, "alg does not match the AK certificate key")
    except InvalidSignature as exc:
        raise AttestationError(Reason.BAD_SIGNATURE, "sig does not verify over certInfo") from exc


def _check_cert_info(attest: TPMS_ATTEST, extra_data: bytes, pub_area: TPMT_PUBLIC) -> None:
    if attest.magic != TPM2_GENERATED.VALUE:
        raise AttestationError(Reason.BAD_ATTEST, "certInfo.magic is not TPM_GENERATED_VALUE")
    if attest.type != TPM2_ST.ATTEST_CERTIFY:
        raise AttestationError(Reason.BAD_ATTEST, "certInfo.type is not TPM_ST_ATTEST_CERTIFY")
    if not hmac.compare_digest(bytes(attest.extraData), extra_data):
        raise AttestationError(Reason.EXTRADATA_MISMATCH, "certInfo.extraData does not bind this key authorization")
    if not hmac.compare_digest(bytes(attest.attested.certify.name), object_name(pub_area)):
        raise AttestationError(Reason.NAME_MISMATCH, "certified name is not the name of pubArea")


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_device_key(pub_area: TPMT_PUBLIC, csr_public_key: PublicKeyTypes | None) -> PublicKeyTypes:
    if not has_attributes(pub_area, RESIDENT_KEY_ATTRIBUTES | TPMA_OBJECT.SIGN_ENCRYPT):
        raise AttestationError(
            Reason.KEY_ATTRIBUTES,
            "certified key is not a fixedTPM/fixedParent/sensitiveDataOrigin signing key",
        )
    device_key = public_key_of(pub_area)
    if csr_public_key is not None and not hmac.compare_digest(_spki(device_key), _spki(csr_public_key)):
        raise AttestationError(Reason.KEY_MISMATCH, "CSR public key is not the attested TPM key")
    return device_key


def _check_identifier(info: AkCertificateInfo, expected: PermanentIdentifier | HardwareModuleName | None) -> None:
    if expected is None:
        return
    if expected not in (info.permanent_identifier, info.hardware_module):
        raise AttestationError(Reason.IDENTIFIER_MISMATCH, "attested device is not the order identifier")


def verify_tpm_attestation(
    att_obj: bytes,
    *,
    key_authorization: str,
    csr_public_key: PublicKeyTypes | None,
    attestation_roots: Sequence[x509.Certificate],
    now: datetime,
    intermediates: Sequence[x509.Certificate] = (),
    expected_identifier: PermanentIdentifier | HardwareModuleName | None = None,
) -> AttestationResult:
    """Stateless verification; every failure raises one :class:`AttestationError`.

    ``csr_public_key`` None defers the CSR comparison (ACME validates before finalize): the caller must
    then compare ``AttestationResult.device_public_key`` with the CSR key itself.

    Order: decode → AK chain and profile → signature over certInfo → certInfo contents → key checks
    → identifier (content is only interpreted once it is authenticated).
    """
    stmt = parse_att_obj(att_obj)
    alg = cose_algorithm(stmt.alg)
    attest = parse_attest(stmt.cert_info)
    pub_area = parse_public_area(stmt.pub_area)
    info = _verify_ak_chain(stmt, attestation_roots, intermediates, require_aware(now))
    _verify_signature(_ak_public_key(info), alg, bare_signature(stmt.sig, alg), stmt.cert_info)
    _check_cert_info(attest, expected_extra_data(key_authorization, stmt.alg), pub_area)
    device_key = _check_device_key(pub_area, csr_public_key)
    _check_identifier(info, expected_identifier)
    fingerprint = (
        info.permanent_identifier.value if info.permanent_identifier.assigner == EK_SPKI_SHA256_ASSIGNER else ""
    )
    return AttestationResult(
        permanent_identifier=info.permanent_identifier,
        hardware_module=info.hardware_module,
        ek_fingerprint=fingerprint,
        ak_cert_serial=info.certificate.serial_number,
        device_public_key=device_key,
        tpm=info.tpm,
    )


class DeviceAttestationVerifier:
    """Stateful wrapper: one :class:`AttestationChallenge` admits exactly one verification attempt."""

    def __init__(
        self,
        attestation_roots: Sequence[x509.Certificate],
        repository: ChallengeRepository[AttestationChallenge],
        clock: Clock,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> None:
        self._roots = tuple(attestation_roots)
        self._intermediates = tuple(intermediates)
        self._repository = repository
        self._clock = clock

    def new_challenge(
        self,
        expected_identifier: PermanentIdentifier | HardwareModuleName | None,
        challenge_id: str | None = None,
        ttl: timedelta = DEFAULT_CHALLENGE_TTL,
    ) -> AttestationChallenge:
        """Create and store a challenge (id defaults to 128+ bits of CSPRNG, draft-09 §8)."""
        now = require_aware(self._clock.now())
        challenge = AttestationChallenge(challenge_id or secrets.token_urlsafe(24), expected_identifier, now, now + ttl)
        self._repository.add(challenge)
        return challenge

    def verify(
        self, challenge_id: str, att_obj: bytes, key_authorization: str, csr_public_key: PublicKeyTypes
    ) -> AttestationResult:
        """Consume the challenge (even if verification then fails), then verify."""
        now = require_aware(self._clock.now())
        challenge = self._repository.get(challenge_id)
        if challenge is None:
            raise AttestationError(Reason.UNKNOWN_CHALLENGE, "no such attestation challenge")
        if not self._repository.consume(challenge_id, now):
            raise AttestationError(Reason.REPLAY, "attestation challenge already used")
        if now > challenge.expires_at:
            raise AttestationError(Reason.EXPIRED, "attestation challenge expired")
        return verify_tpm_attestation(
            att_obj,
            key_authorization=key_authorization,
            csr_public_key=csr_public_key,
            attestation_roots=self._roots,
            intermediates=self._intermediates,
            now=now,
            expected_identifier=challenge.expected_identifier,
        )
