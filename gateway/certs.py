"""Peer certificate path validation for IKE_AUTH (RFC 5280 §6, profile of RFC 4945 §5).

The peer's CERT payloads give the end-entity first and intermediates after (RFC 7296
§3.6). We build a path to a configured root and check signatures, validity, basic
constraints, KU digitalSignature and EKU (id-kp-ipsecIKE or clientAuth, RFC 4945 §5.1.3.12).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID

IPSEC_IKE_EKU = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")
ACCEPTED_EKUS = frozenset({IPSEC_IKE_EKU, ExtendedKeyUsageOID.CLIENT_AUTH})
MAX_DEPTH = 6


class CertificateRejected(ValueError):
    """The peer's certificate path is unacceptable; ``reason`` is short, for the event log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ValidatedPath:
    """A verified path: leaf, its issuer, and the rest up to (and including) the root."""

    leaf: x509.Certificate
    issuer: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def spki_sha1(cert: x509.Certificate) -> bytes:
    """SHA-1 of the DER SubjectPublicKeyInfo: the CERTREQ authority hash (RFC 7296 §3.7)."""
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(der, usedforsecurity=False).digest()


def key_id(cert: x509.Certificate) -> str:
    """Hex SubjectKeyIdentifier of a CA (what revocation events call issuer_key_id)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex()  # type: ignore[arg-type]


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_leaf(leaf: x509.Certificate) -> None:
    ku = _ext(leaf, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        raise CertificateRejected("key usage lacks digitalSignature")
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if not isinstance(eku, x509.ExtendedKeyUsage) or not ACCEPTED_EKUS & set(eku):
        raise CertificateRejected("EKU lacks id-kp-ipsecIKE and clientAuth")


def _check_ca(cert: x509.Certificate) -> None:
    bc = _ext(cert, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
        raise CertificateRejected(f"issuer {cert.subject.rfc4514_string()} is not a CA")
    ku = _ext(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        raise CertificateRejected("issuer key usage lacks keyCertSign")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def validate_path(peer: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: datetime
                  ) -> ValidatedPath:
    """Build and verify leaf → intermediates → root; raise :class:`CertificateRejected`."""
    if not peer:
        raise CertificateRejected("no certificate")
    leaf = peer[0]
    _check_leaf(leaf)
    path = [leaf]
    pool = list(peer[1:])
    for _ in range(MAX_DEPTH):
        cur = path[-1]
        root = next((r for r in roots if _signed_by(cur, r)), None)
        if root is not None:
            path.append(root)
            break
        nxt = next((c for c in pool if c not in path and _signed_by(cur, c)), None)
        if nxt is None:
            raise CertificateRejected("certificate does not chain to a trusted root")
        path.append(nxt)
    else:
        raise CertificateRejected("certificate path too long")
    for cert in path:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise CertificateRejected(f"certificate {cert.subject.rfc4514_string()} expired or not yet valid")
    for cert in path[1:]:
        _check_ca(cert)
    return ValidatedPath(leaf, path[1], tuple(path[1:]))
