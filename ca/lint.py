"""In-process certificate lint, run on every issued certificate before it is recorded or
returned (Boulder's lint-before-issue idea). It checks the profile's invariants; the test
suite additionally runs pkilint over every profile's output (pkilint costs milliseconds per
certificate, too slow for the issuance path)."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from ca.errors import ErrorKind, PKIError
from ca.issuer import Issuer
from ca.profiles import OID_OCSP_NOCHECK, Profile, check_sans


def _fail(msg: str) -> PKIError:
    return PKIError(ErrorKind.INTERNAL, f"lint: {msg}")


def lint_issued(cert: x509.Certificate, profile: Profile, issuer: Issuer) -> None:
    """Raise if ``cert`` violates RFC 5280 basics or the profile. Never returns a bad cert."""
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
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    if not bc.critical or bc.value.ca:
        raise _fail("basicConstraints must be critical with cA=false")
    ku = ext.get_extension_for_class(x509.KeyUsage)
    if not ku.critical or not ku.value.digital_signature or ku.value.key_cert_sign or ku.value.crl_sign:
        raise _fail("keyUsage must be critical digitalSignature without certificate/CRL signing")
    if profile.ekus:
        eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        if list(eku) != list(profile.ekus):
            raise _fail("extendedKeyUsage differs from the profile")
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier != issuer.key_id:
        raise _fail("authorityKeyIdentifier does not match the issuer")
    ext.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    try:
        sans = list(ext.get_extension_for_class(x509.SubjectAlternativeName).value)
        san_critical = ext.get_extension_for_class(x509.SubjectAlternativeName).critical
    except x509.ExtensionNotFound:
        sans, san_critical = [], False
    if len(cert.subject) == 0 and (not sans or not san_critical):
        raise _fail("an empty subject needs a critical subjectAltName (RFC 5280 §4.2.1.6)")
    check_sans(profile, sans)
    nocheck = any(e.oid == OID_OCSP_NOCHECK for e in ext)
    if not nocheck:
        ext.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
        ext.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    try:
        cert.verify_directly_issued_by(issuer.certificate)
    except Exception as exc:  # any failure to verify means the HSM produced garbage
        raise _fail(f"signature does not verify with the issuer key: {exc!r}") from None
