"""PKCS#10 (RFC 2986) request parsing and strength checks shared by every enrollment protocol.

Some real clients (strongSwan ``pki --req``) emit the attributes SET OF in non-DER order,
which cryptography rejects. We then parse with asn1crypto, verify the signature over the
original ``CertificationRequestInfo`` bytes, and re-encode canonically for typed access.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AttributeOID

from ca.errors import ErrorKind, PKIError

MAX_CSR_BYTES = 64 * 1024
ALLOWED_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_WEAK_HASHES = ("md5", "sha1")


@dataclass(frozen=True)
class CertificationRequest:
    """A verified, strength-checked CSR."""

    der: bytes
    csr: x509.CertificateSigningRequest
    public_key: CertificatePublicKeyTypes
    challenge_password: str | None

    @property
    def subject(self) -> x509.Name:
        return self.csr.subject

    @property
    def sans(self) -> list[x509.GeneralName]:
        try:
            ext = self.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return list(ext.value)


def decode_csr_bytes(data: bytes) -> bytes:
    """Accept DER, PEM, or bare base64 (with or without line breaks) and return DER."""
    if len(data) > MAX_CSR_BYTES:
        raise PKIError(ErrorKind.BAD_CSR, f"CSR larger than {MAX_CSR_BYTES} bytes")
    if data[:1] == b"\x30":
        return data
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        lines = [ln for ln in stripped.splitlines() if ln and not ln.startswith(b"-----")]
        stripped = b"".join(lines)
    try:
        return base64.b64decode(b"".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError):
        raise PKIError(ErrorKind.BAD_CSR, "CSR is neither DER, PEM nor base64") from None


def parse_csr(data: bytes) -> CertificationRequest:
    """Parse, verify the self-signature and check key strength (RFC 2986 §4)."""
    der = decode_csr_bytes(data)
    try:
        csr = x509.load_der_x509_csr(der)
        _check_signature_hash(csr)
        if not csr.is_signature_valid:
            raise PKIError(ErrorKind.BAD_CSR, "CSR signature is invalid")
    except PKIError:
        raise
    except x509.InvalidVersion:
        raise PKIError(ErrorKind.BAD_CSR, "CSR version is not v1 (0) (RFC 2986 §4.1)") from None
    except (ValueError, UnsupportedAlgorithm):
        csr = _parse_noncanonical(der)
    _check_signature_hash(csr)
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise PKIError(ErrorKind.BAD_CSR, "unsupported public key in CSR") from None
    check_key_strength(public_key)
    return CertificationRequest(der=der, csr=csr, public_key=public_key,
                                challenge_password=_challenge_password(csr))


def _parse_noncanonical(der: bytes) -> x509.CertificateSigningRequest:
    try:
        req = asn1_csr.CertificationRequest.load(der, strict=True)
        info = req["certification_request_info"]
        original_info = info.dump()
        spki = req["certification_request_info"]["subject_pk_info"].dump()
        sig_alg = req["signature_algorithm"]
        signature = req["signature"].native
        public_key = serialization.load_der_public_key(spki)
        _verify_raw(public_key, signature, original_info, sig_alg)
        attrs = list(info["attributes"])
        attrs.sort(key=lambda a: a.dump())
        info["attributes"] = attrs
        canonical = asn1_csr.CertificationRequest({"certification_request_info": info,
                                                   "signature_algorithm": sig_alg, "signature": signature})
        return x509.load_der_x509_csr(canonical.dump(force=True))
    except PKIError:
        raise
    except (ValueError, TypeError, KeyError, UnsupportedAlgorithm):
        raise PKIError(ErrorKind.BAD_CSR, "not a valid PKCS#10 certification request") from None


def _verify_raw(public_key: object, signature: bytes, data: bytes, sig_alg: object) -> None:
    algo = sig_alg["algorithm"].native  # type: ignore[index]
    hash_name = sig_alg.hash_algo  # type: ignore[attr-defined]
    h = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}.get(hash_name)
    if h is None:
        raise PKIError(ErrorKind.BAD_CSR, f"CSR signature hash {hash_name} is not allowed")
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if algo == "rsassa_pss":
                pad = padding.PSS(padding.MGF1(h), padding.PSS.AUTO)
            public_key.verify(signature, data, pad, h)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(h))
        else:
            raise PKIError(ErrorKind.BAD_CSR, "unsupported CSR key type")
    except InvalidSignature:
        raise PKIError(ErrorKind.BAD_CSR, "CSR signature is invalid") from None


def _check_signature_hash(csr: x509.CertificateSigningRequest) -> None:
    h = csr.signature_hash_algorithm
    if h is not None and h.name in _WEAK_HASHES:
        raise PKIError(ErrorKind.BAD_CSR, f"CSR signed with {h.name.upper()}, which is not allowed")


def check_key_strength(key: object) -> None:
    """RSA >= 2048 bits; ECDSA only on P-256/P-384; Ed25519 allowed."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise PKIError(ErrorKind.BAD_CSR, f"RSA key of {key.key_size} bits is too weak (minimum {MIN_RSA_BITS})")
        if key.key_size > MAX_RSA_BITS:
            raise PKIError(ErrorKind.BAD_CSR, f"RSA key of {key.key_size} bits is too large")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            raise PKIError(ErrorKind.BAD_CSR, f"curve {key.curve.name} is not allowed (P-256, P-384, Ed25519)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise PKIError(ErrorKind.BAD_CSR, f"key type {type(key).__name__} is not allowed")


def without_challenge_password(der: bytes) -> bytes:
    """The CSR with its challengePassword attribute (RFC 2985 §5.4.1) removed, for storage: a shared
    secret must not be kept after it was checked. The signature no longer verifies (it covered the
    password), so the result is only for :func:`load_stored_csr`, never for a new request."""
    try:
        req = asn1_csr.CertificationRequest.load(der, strict=True)
        info = req["certification_request_info"]
        attrs = [a for a in info["attributes"] if a["type"].native != "challenge_password"]
        if len(attrs) == len(info["attributes"]):
            return der
        attrs.sort(key=lambda a: a.dump())  # DER SET OF order
        info["attributes"] = attrs  # only this part is re-encoded; the rest keeps the verified encoding
        return asn1_csr.CertificationRequest({"certification_request_info": info,
                                              "signature_algorithm": req["signature_algorithm"],
                                              "signature": req["signature"]}).dump()
    except (ValueError, TypeError, KeyError):
        raise PKIError(ErrorKind.BAD_CSR, "not a valid PKCS#10 certification request") from None


def load_stored_csr(der: bytes) -> CertificationRequest:
    """A CSR the CA verified on receipt (:func:`parse_csr`) and stored with
    :func:`without_challenge_password` (e.g. an SCEP request awaiting manual approval). Its
    signature is not checked again (it covered the removed password); the key strength is."""
    try:
        csr = x509.load_der_x509_csr(der)
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise PKIError(ErrorKind.BAD_CSR, "stored CSR is unreadable") from None
    check_key_strength(public_key)
    return CertificationRequest(der=der, csr=csr, public_key=public_key, challenge_password=None)


def _challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except (x509.AttributeNotFound, ValueError):
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
