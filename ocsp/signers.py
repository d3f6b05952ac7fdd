"""Delegated OCSP signers (RFC 6960 §4.2.2.2): one HSM key per issuing CA (``ocsp-<issuer>``) with a
short-lived certificate (EKU id-kp-OCSPSigning + id-pkix-ocsp-nocheck).

The newest certificate of each signer lives in ``ocsp_signer_certs`` so every replica signs with
the same one; the file named in the manifest (``services/ocsp-<issuer>.pem``) is the seed and is
rewritten on rotation. Rotation runs under the ``ocsp-signer-rotation`` lease (one replica).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import insert, select

from ca.clock import as_utc
from ca.errors import ErrorKind, PKIError
from ca.keys.signer import SigningKey
from ca.model import Requester
from ca.ports import ServiceKeys
from ocsp.records import OcspSignerCertRecord
from ocsp.responder_der import certs_field
from ocsp.signing import algorithm_identifier

SIGNER_CERTS = OcspSignerCertRecord.__table__  # type: ignore[attr-defined]
log = logging.getLogger("ikepki.ocsp.signers")
MIN_SIGNER_VALIDITY = timedelta(minutes=10)
SIGNER_RELOAD_SECONDS = 30.0
SIGNER_RETRY_SECONDS = 5.0  # a signer that could not be loaded (e.g. an offline root key) is tried again this often
ROOT = "root"  # the root CA signs (with its own key) the answers about the issuing CA certificates
_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents (what CertID issuerKeyHash and byKey hash)."""
    pub = cert.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if isinstance(pub, rsa.RSAPublicKey):
        return pub.public_bytes(Encoding.DER, PublicFormat.PKCS1)
    raise TypeError(f"unsupported issuer key {type(pub).__name__}")


def issuer_hashes(cert: x509.Certificate) -> list[tuple[str, bytes, bytes]]:
    """(hash name, issuerNameHash, issuerKeyHash) for every CertID hash we accept (RFC 6960 §4.1.1)."""
    name, key = cert.subject.public_bytes(), public_key_bits(cert)
    return [(h, fn(name).digest(), fn(key).digest()) for h, fn in _HASHES.items()]


@dataclass(frozen=True)
class Signer:
    """What signs responses for one issuing CA: the delegated key + cert (or the CA itself)."""

    issuer_id: str
    key: SigningKey
    certificate: x509.Certificate
    delegated: bool

    @cached_property
    def key_hash(self) -> bytes:
        return hashlib.sha1(public_key_bits(self.certificate)).digest()  # noqa: S324  (RFC 6960 byKey)

    @cached_property
    def alg_id(self) -> bytes:
        return algorithm_identifier(self.key)

    @cached_property
    def certs_der(self) -> list[bytes]:
        return [self.certificate.public_bytes(Encoding.DER)] if self.delegated else []

    @cached_property
    def certs_field(self) -> bytes:
        """The ``certs [0] EXPLICIT SEQUENCE OF Certificate`` that ends each of its responses
        (RFC 6960 §4.2.1), empty when none is included."""
        return certs_field(self.certs_der)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


def service_name(issuer_id: str) -> str:
    return f"ocsp-{issuer_id}"


def load_signer(dep: ServiceKeys, issuer_id: str) -> Signer:
    """The delegated signer with its newest certificate; the issuing CA itself when the deployment
    has no delegated key for it or that certificate is about to expire (RFC 6960 §2.6 allows both);
    the root CA key for ``root`` (answers about issuing CAs)."""
    if issuer_id == ROOT:
        return Signer(issuer_id, dep.signing_key(dep.manifest["root"]["key"]), dep.root, delegated=False)
    try:
        svc = dep.service_key(service_name(issuer_id))
    except PKIError:
        issuer = dep.issuers[issuer_id]
        return Signer(issuer_id, issuer.key, issuer.certificate, delegated=False)
    cert = newest_cert(dep, issuer_id, svc.certificate)
    if cert.not_valid_after_utc - dep.clock.now() < MIN_SIGNER_VALIDITY:  # rotation failed for too long
        log.warning("OCSP signer certificate for %s expires %s: signing with the CA key", issuer_id,
                    cert.not_valid_after_utc)
        issuer = dep.issuers[issuer_id]
        return Signer(issuer_id, issuer.key, issuer.certificate, delegated=False)
    return Signer(issuer_id, svc.key, cert, delegated=True)


class CurrentSigners:
    """The signer each issuing CA (and the root) answers with now, reloaded when older than
    ``SIGNER_RELOAD_SECONDS`` so a certificate rotated by another replica is picked up. Loading
    touches the HSM and the store: it runs on ``pool`` (the responder's signing thread)."""

    def __init__(self, dep: ServiceKeys, pool: Executor) -> None:
        self.dep = dep
        self.pool = pool
        self.by_issuer: dict[str, Signer] = {}
        self.loaded_at = 0.0
        self.failed: dict[str, tuple[float, str]] = {}  # issuer -> (when, why) its last load failed
        self._reloading: asyncio.Future[None] | None = None  # one reload at a time, shared by its callers

    async def get(self, issuer_id: str) -> Signer:
        """The signer for ``issuer_id``; PKIError(UNAVAILABLE) if it cannot be loaded (an earlier
        one keeps signing while a reload fails)."""
        signer = self.by_issuer.get(issuer_id)
        if signer is None and issuer_id in self.failed:  # not on every request: at most every few seconds
            when, why = self.failed[issuer_id]
            if time.monotonic() - when < SIGNER_RETRY_SECONDS:
                raise PKIError(ErrorKind.UNAVAILABLE, f"OCSP signer for {issuer_id}: {why}")
        if signer is None or time.monotonic() - self.loaded_at > SIGNER_RELOAD_SECONDS:
            try:
                if self._reloading is None:
                    self._reloading = asyncio.ensure_future(
                        asyncio.get_running_loop().run_in_executor(self.pool, self.reload))
                    self._reloading.add_done_callback(self._reloaded)
                await asyncio.shield(self._reloading)
            except Exception as exc:
                if issuer_id not in self.by_issuer:
                    raise PKIError(ErrorKind.UNAVAILABLE, f"OCSP signer for {issuer_id}: {exc}") from None
                log.warning("could not reload OCSP signers: %s", exc)
            signer = self.by_issuer[issuer_id]
        return signer

    def _reloaded(self, done: asyncio.Future[None]) -> None:
        self._reloading = None
        if not done.cancelled():
            done.exception()  # retrieved: the callers that waited have seen it

    def reload(self) -> None:
        """(Re)load every issuer's signer (blocking); raises after loading the others if any failed."""
        failures = []
        for issuer_id in [*self.dep.issuers, ROOT]:
            try:
                signer = load_signer(self.dep, issuer_id)
            except Exception as exc:  # e.g. an offline root key: the others still answer
                failures.append(f"{issuer_id}: {exc}")
                self.failed[issuer_id] = (time.monotonic(), str(exc))
                continue
            self.failed.pop(issuer_id, None)
            old = self.by_issuer.get(issuer_id)
            if old is not None and old.certificate != signer.certificate:
                log.info("OCSP signer for %s now %x", issuer_id, signer.certificate.serial_number)
            self.by_issuer[issuer_id] = signer
        self.loaded_at = time.monotonic()
        if failures:
            raise RuntimeError("; ".join(failures))


def newest_cert(dep: ServiceKeys, issuer_id: str, seed: x509.Certificate) -> x509.Certificate:
    """The table's newest cert for this signer key (falls back to ``seed``, the manifest file)."""
    with dep.db.read() as conn:
        row = conn.execute(select(SIGNER_CERTS.c.der).where(SIGNER_CERTS.c.issuer_id == issuer_id)
                           .order_by(SIGNER_CERTS.c.not_after.desc()).limit(1)).first()
    if row is None:
        return seed
    cert = x509.load_der_x509_certificate(bytes(row.der))
    same_key = public_key_bits(cert) == public_key_bits(seed)
    return cert if same_key and cert.not_valid_after_utc > seed.not_valid_after_utc else seed


def delegated_cert(dep: ServiceKeys, issuer_id: str) -> x509.Certificate | None:
    """The newest certificate of the issuer's delegated signer key, None if it has none."""
    try:
        svc = dep.service_key(service_name(issuer_id))
    except PKIError:
        return None
    return newest_cert(dep, issuer_id, svc.certificate)


def needs_rotation(cert: x509.Certificate, now: datetime, before: timedelta) -> bool:
    return cert.not_valid_after_utc - now <= before


def rotate(dep: ServiceKeys, issuer_id: str) -> x509.Certificate:
    """Issue a fresh certificate for the signer key through the Authority, record it in the table
    (so other replicas switch) and rewrite the manifest's PEM file. Blocking."""
    from ca.deployment import issue_service_cert

    name = service_name(issuer_id)
    svc = dep.service_key(name)
    entry = dep.manifest["service_keys"][name]
    issued = issue_service_cert(dep, entry.get("profile", "ocsp-signer"), issuer_id, svc.key,
                                svc.certificate.subject, Requester("ocsp", "signer-rotation"))
    cert = issued.certificate
    now = dep.clock.now()
    with dep.db.write() as conn:
        conn.execute(insert(SIGNER_CERTS), {"issuer_id": issuer_id, "serial": format(cert.serial_number, "x"),
                                            "not_after": cert.not_valid_after_utc,
                                            "der": cert.public_bytes(Encoding.DER), "created_at": now})
    path = dep.path(entry["cert"])
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(issued.pem_chain())
    tmp.replace(path)
    log.info("rotated OCSP signer %s: serial %x until %s", name, cert.serial_number, as_utc(cert.not_valid_after_utc))
    return cert
