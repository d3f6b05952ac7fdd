"""In-process certificate lint, run on every certificate before the issuer's key signs it
(Boulder's lint-before-issue: :func:`lint_issued` checks a copy signed by a throwaway key of the
issuer's key type, :func:`lint_signed` checks that the HSM-signed result is that copy, correctly
signed). It checks the profile's invariants; the test suite additionally runs pkilint over every
profile's output (pkilint costs milliseconds per certificate, too slow for the issuance path)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtensionOID

from ca.errors import ErrorKind, PKIError
from ca.issuer import Issuer
from ca.model import PostureMark
from ca.profiles import OID_OCSP_NOCHECK, Profile, check_sans

_E = TypeVar("_E", bound=x509.ExtensionType)


def _fail(msg: str) -> PKIError:
    return PKIError(ErrorKind.INTERNAL, f"lint: {msg}")


class LintKeys:
    """Throwaway keys, one per issuer, of the issuer key's type (curve, RSA size): they sign the copy
    that is linted, so the signature algorithm — and hence the TBSCertificate — is the real one's.
    The copy's signature is never checked (lint reads its TBS; :func:`lint_signed` verifies the real
    one), so RSA issuers get :class:`UnsignedRsaKey`: an RSA-3072 software signature per issuance
    (≈ 0.7 ms, the SCEP CA) bought nothing. EC and Ed25519 software signatures cost microseconds."""

    def __init__(self) -> None:
        self._keys: dict[str, CertificateIssuerPrivateKeyTypes] = {}
        self._lock = threading.Lock()

    def like(self, issuer: Issuer) -> CertificateIssuerPrivateKeyTypes:
        key = self._keys.get(issuer.id)
        if key is None:
            with self._lock:
                key = self._keys.get(issuer.id) or _key_like(issuer.key.key)
                self._keys[issuer.id] = key
        return key


def _key_like(key: CertificateIssuerPrivateKeyTypes) -> CertificateIssuerPrivateKeyTypes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(key.curve)
    if isinstance(key, rsa.RSAPrivateKey):
        return UnsignedRsaKey(key.public_key())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ed25519.Ed25519PrivateKey.generate()
    raise PKIError(ErrorKind.CONFIG, f"unsupported issuer key type {type(key).__name__}")


class UnsignedRsaKey(rsa.RSAPrivateKey):
    """An RSA "key" of the issuer's size whose signature is all zero bytes: for the linted copy only
    (its TBSCertificate is what the issuer's key will sign; that signature is verified)."""

    def __init__(self, public: rsa.RSAPublicKey) -> None:
        self._public = public

    def sign(self, data: bytes | bytearray | memoryview, padding_: Any, algorithm: Any) -> bytes:
        return bytes((self._public.key_size + 7) // 8)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding_: Any) -> bytes:
        raise NotImplementedError("a lint key does not decrypt")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise NotImplementedError("a lint key has no private numbers")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise NotImplementedError("a lint key has no private numbers")

    def __copy__(self) -> UnsignedRsaKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> UnsignedRsaKey:
        return self


def lint_issued(cert: x509.Certificate, profile: Profile, issuer: Issuer, posture: PostureMark | None = None) -> None:
    """Raise if ``cert`` (the throwaway-key copy) violates RFC 5280 basics or the profile.

    With ``posture``: certificatePolicies holds exactly the profile's and the posture's policy, and
    notAfter does not exceed the evidence expiry."""
    try:
        _lint(cert, profile, issuer, posture)
    except x509.ExtensionNotFound as exc:
        raise _fail(f"missing extension {exc.oid.dotted_string}") from None
    except ValueError as exc:  # duplicate or undecodable extension
        raise _fail(f"extensions do not decode: {exc}") from None


def lint_signed(cert: x509.Certificate, linted: x509.Certificate, issuer: Issuer) -> None:
    """The HSM-signed ``cert`` is the linted copy (same TBSCertificate) and its signature verifies."""
    if cert.tbs_certificate_bytes != linted.tbs_certificate_bytes:
        raise _fail("the signed certificate differs from the linted one")
    try:
        cert.verify_directly_issued_by(issuer.certificate)
    except Exception as exc:  # any failure to verify means the HSM produced garbage
        raise _fail(f"signature does not verify with the issuer key: {exc!r}") from None


def _lint(cert: x509.Certificate, profile: Profile, issuer: Issuer, posture: PostureMark | None) -> None:
    if cert.version is not x509.Version.v3:
        raise _fail("not X.509 v3")
    if not (0 < cert.serial_number < 1 << 159) or cert.serial_number.bit_length() < 64:
        raise _fail("serial must be positive, <= 20 octets and carry >= 64 bits")
    if cert.not_valid_after_utc <= cert.not_valid_before_utc:
        raise _fail("empty validity")
    if cert.not_valid_after_utc > issuer.certificate.not_valid_after_utc:
        raise _fail("validity exceeds the issuer's")
    if cert.not_valid_after_utc - cert.not_valid_before_utc > profile.max_lifetime + timedelta(minutes=5):
        raise _fail("validity exceeds the profile maximum")
    if cert.issuer != issuer.certificate.subject:
        raise _fail("issuer name differs from the CA subject")
    ext = _Extensions(cert.extensions)
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    if not bc.critical or bc.value.ca:
        raise _fail("basicConstraints must be critical with cA=false")
    ku = ext.get_extension_for_class(x509.KeyUsage)
    if not ku.critical or not ku.value.digital_signature or ku.value.key_cert_sign or ku.value.crl_sign:
        raise _fail("keyUsage must be critical digitalSignature without certificate/CRL signing")
    if ku.value.key_encipherment != profile.key_encipherment:
        raise _fail("keyUsage keyEncipherment differs from the profile")
    if profile.ekus:
        eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        if list(eku) != list(profile.ekus):
            raise _fail("extendedKeyUsage differs from the profile")
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier != issuer.key_id:
        raise _fail("authorityKeyIdentifier does not match the issuer")
    ext.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    try:
        san_ext = ext.get_extension_for_class(x509.SubjectAlternativeName)
        sans, san_critical = list(san_ext.value), san_ext.critical
    except x509.ExtensionNotFound:
        sans, san_critical = [], False
    if len(cert.subject) == 0 and (not sans or not san_critical):
        raise _fail("an empty subject needs a critical subjectAltName (RFC 5280 §4.2.1.6)")
    check_sans(profile, sans)
    policies = [p.policy_identifier for p in ext.get_extension_for_class(x509.CertificatePolicies).value]
    wanted = [profile.policy_oid] + ([posture.policy_oid] if posture else [])
    if policies != wanted:
        raise _fail("certificatePolicies differ from the profile (and posture) policy")
    if posture is not None and cert.not_valid_after_utc > posture.evidence_expires:
        raise _fail("validity exceeds the device posture evidence")
    if any(e.oid == OID_OCSP_NOCHECK for e in ext) != profile.ocsp_nocheck:
        raise _fail("id-pkix-ocsp-nocheck presence differs from the profile")
    pointers = [oid for oid in (ExtensionOID.AUTHORITY_INFORMATION_ACCESS, ExtensionOID.CRL_DISTRIBUTION_POINTS)
                if any(e.oid == oid for e in ext)]
    if profile.revocation_pointers and len(pointers) != 2:
        raise _fail("authorityInfoAccess and cRLDistributionPoints are required by the profile")
    if not profile.revocation_pointers and pointers:
        raise _fail("the profile carries no revocation pointers")


class _Extensions:
    """The certificate's extensions by OID, indexed once (cryptography's lookups scan the list each
    time); the same lookups and the same ExtensionNotFound."""

    def __init__(self, extensions: x509.Extensions) -> None:
        self._by_oid = {e.oid: e for e in extensions}

    def __iter__(self) -> Iterator[x509.Extension[x509.ExtensionType]]:
        return iter(self._by_oid.values())

    def get_extension_for_oid(self, oid: x509.ObjectIdentifier) -> x509.Extension[x509.ExtensionType]:
        found = self._by_oid.get(oid)
        if found is None:
            raise x509.ExtensionNotFound(f"no {oid.dotted_string} extension", oid)
        return found

    def get_extension_for_class(self, cls: type[_E]) -> x509.Extension[_E]:
        return self.get_extension_for_oid(cls.oid)  # type: ignore[return-value]
