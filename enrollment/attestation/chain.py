"""Minimal RFC 5280 §6 path validation for the closed attestation PKIs (EK and AK chains).

These hierarchies (TPM manufacturer CAs, the ikepki attestation CA) are not Web PKI: their leaves
carry critical SAN dirNames, empty subjects and TCG EKUs that a TLS-oriented verifier rejects, so
the path is built and checked here: issuer/subject chaining, every signature, validity at ``now``,
``cA`` + ``keyCertSign`` on every issuer, path length bounded.  Trust anchors are matched by
subject *and* signature, never by name alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

MAX_CHAIN_DEPTH = 5
MAX_CERT_DER = 8192
MAX_TRUST_FILE = 1 << 20
MAX_TRUST_CERTS = 256


class ChainError(ValueError):
    """The path could not be validated (the caller maps it to its own reason)."""


def load_der_certificate(der: bytes, *, strict_serial: bool = True) -> x509.Certificate:
    """Parse one bounded DER certificate (raises ChainError).

    ``strict_serial=False`` tolerates a non-positive serial (RFC 5280 §4.1.2.2 violation found in some
    TPM vendors' EK certificates); our own AK certificates are always checked strictly.
    """
    if not isinstance(der, bytes) or not 0 < len(der) <= MAX_CERT_DER:
        raise ChainError("certificate missing or larger than the bound")
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography decodes some fields lazily: force them now so later code never meets a parse error
        _ = (cert.version, cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.extensions, cert.public_key(), cert.signature_algorithm_oid)
    except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType,
            UnsupportedAlgorithm) as exc:
        # TypeError: cryptography refuses some mistyped attributes in names (e.g. a BIT STRING value for an
        # attribute other than x500UniqueIdentifier) with TypeError while decoding extensions
        raise ChainError(f"certificate does not parse: {exc}") from exc
    if strict_serial and cert.serial_number <= 0:  # RFC 5280 §4.1.2.2; cryptography only warns (for now)
        raise ChainError("certificate serial number is not positive")
    return cert


def load_pem_directory(path: Path) -> tuple[x509.Certificate, ...]:
    """All certificates in ``*.pem``/``*.crt``/``*.cer`` files of a directory (bounded)."""
    certs: list[x509.Certificate] = []
    for file in sorted(path.iterdir()):
        if file.suffix.lower() not in {".pem", ".crt", ".cer"} or not file.is_file():
            continue
        data = file.read_bytes()
        if len(data) > MAX_TRUST_FILE:
            raise ChainError(f"{file} is larger than {MAX_TRUST_FILE} bytes")
        if b"-----BEGIN CERTIFICATE-----" not in data:
            continue  # e.g. a private key next to the CA certificate
        certs.extend(x509.load_pem_x509_certificates(data))
        if len(certs) > MAX_TRUST_CERTS:
            raise ChainError(f"more than {MAX_TRUST_CERTS} trust certificates in {path}")
    return tuple(certs)


def is_self_issued(cert: x509.Certificate) -> bool:
    """Subject == issuer and the certificate verifies under its own key."""
    return cert.subject == cert.issuer and _issued_by(cert, cert)


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ChainError(f"certificate {cert.serial_number:x} is not valid at {now.isoformat()}")


def _check_issuer_capability(issuer: x509.Certificate) -> None:
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise ChainError("issuer certificate has no basicConstraints") from exc
    if not bc.ca:
        raise ChainError("issuer certificate is not a CA")
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise ChainError("issuer certificate lacks keyCertSign")


def _find_issuer(cert: x509.Certificate, pool: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in pool:
        if candidate.subject == cert.issuer and _issued_by(cert, candidate):
            return candidate
    return None


def validate_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> list[x509.Certificate]:
    """Return ``[leaf, ..., anchor]`` or raise :class:`ChainError` (RFC 5280 §6.1, simplified)."""
    path = [leaf]
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH):
        _check_validity(current, now)
        anchor = _find_issuer(current, roots)
        if anchor is not None:
            _check_issuer_capability(anchor)
            _check_validity(anchor, now)
            path.append(anchor)
            return path
        issuer = _find_issuer(current, intermediates)
        if issuer is None or issuer in path:
            raise ChainError("no path to a trust anchor")
        _check_issuer_capability(issuer)
        path.append(issuer)
        current = issuer
    raise ChainError("certificate path longer than the bound")
