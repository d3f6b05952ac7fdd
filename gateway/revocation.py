"""Revocation checking for peer certificates.

Order: the pushed block list first (events from ikepki, see :mod:`gateway.push`), then
OCSP (RFC 6960) to the URL in the certificate's AIA extension (RFC 5280 §4.2.2.1).
``strict`` requires a GOOD answer; ``relaxed`` accepts an unavailable status but
refuses REVOKED; ``off`` skips OCSP. Responses are cached until nextUpdate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway.certs import key_id
from gateway.clock import Clock

OCSP_TIMEOUT = 3.0
MAX_OCSP_RESPONSE = 64 * 1024


class OcspMode(StrEnum):
    STRICT = "strict"
    RELAXED = "relaxed"
    OFF = "off"


class Revoked(ValueError):
    """The certificate is revoked or its status is required but unknown."""


@dataclass
class Blocklist:
    """(issuer key id hex, serial) pairs pushed by ikepki; idempotent adds."""

    entries: set[tuple[str, int]] = field(default_factory=set)

    def add(self, issuer_key_id: str, serial: int) -> bool:
        key = (issuer_key_id.lower(), serial)
        if key in self.entries:
            return False
        self.entries.add(key)
        return True

    def remove(self, issuer_key_id: str, serial: int) -> None:
        self.entries.discard((issuer_key_id.lower(), serial))

    def blocks(self, issuer_key_id: str, serial: int) -> bool:
        return (issuer_key_id.lower(), serial) in self.entries


def ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
                desc.access_location, x509.UniformResourceIdentifier):
            return desc.access_location.value
    return None


def _responder_ok(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    """RFC 6960 §4.2.2.2: signed by the issuer or by a delegate it issued with EKU OCSPSigning."""
    signer = issuer
    if resp.certificates:
        delegate = resp.certificates[0]
        try:
            delegate.verify_directly_issued_by(issuer)
            eku = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return False
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return False
        signer = delegate
    try:
        pub = signer.public_key()
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

        hash_alg = resp.signature_hash_algorithm or hashes.SHA256()
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hash_alg))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hash_alg)
        else:
            return False
    except InvalidSignature:
        return False
    return True


@dataclass
class OcspChecker:
    """Asks the AIA OCSP responder; caches answers until nextUpdate."""

    mode: OcspMode
    clock: Clock
    cache: dict[tuple[str, int], tuple[ocsp.OCSPCertStatus, datetime]] = field(default_factory=dict)

    async def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPCertStatus | None:
        key = (key_id(issuer), cert.serial_number)
        hit = self.cache.get(key)
        if hit and hit[1] > self.clock.now():
            return hit[0]
        url = ocsp_url(cert)
        if url is None:
            return None
        nonce = os.urandom(16)
        req = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303 - RFC 6960
               .add_extension(x509.OCSPNonce(nonce), critical=False).build())
        try:
            async with httpx.AsyncClient(timeout=OCSP_TIMEOUT) as client:
                r = await client.post(url, content=req.public_bytes(serialization.Encoding.DER),
                                      headers={"Content-Type": "application/ocsp-request"})
            if r.status_code != 200 or len(r.content) > MAX_OCSP_RESPONSE:
                return None
            resp = ocsp.load_der_ocsp_response(r.content)
        except (httpx.HTTPError, ValueError):
            return None
        return self._accept(resp, cert, issuer, key)

    def _accept(self, resp: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate,
                key: tuple[str, int]) -> ocsp.OCSPCertStatus | None:
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL or not _responder_ok(resp, issuer):
            return None
        if resp.serial_number != cert.serial_number:
            return None
        now = self.clock.now()
        next_update = resp.next_update_utc or now
        if resp.this_update_utc > now + timedelta(minutes=5) or next_update + timedelta(minutes=5) < now:
            return None
        self.cache[key] = (resp.certificate_status, next_update)
        return resp.certificate_status

    async def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> None:
        """Raise :class:`Revoked` unless the certificate passes under :attr:`mode`."""
        if self.mode == OcspMode.OFF:
            return
        status = await self.status(cert, issuer)
        if status == ocsp.OCSPCertStatus.REVOKED:
            raise Revoked("OCSP: certificate revoked")
        if status != ocsp.OCSPCertStatus.GOOD and self.mode == OcspMode.STRICT:
            raise Revoked("OCSP: status unavailable (strict)")
