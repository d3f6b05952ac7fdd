"""A fresh CRL for the VICI driver to ``load-cert`` into strongSwan (strongswan.md §8 step 1).

Sources, in order:
1. the newest full CRL the CRL publisher recorded (``ocsp_crl_publications``, the bytes every
   replica serves at the CDP URL) if it already lists the serials being pushed;
2. a new full CRL published right now through :class:`ocsp.crl_publisher.CrlPublisher` (next
   cRLNumber, recorded and served like any other; a racing publisher is handled by its unique
   CRL number);
3. the issuer's CDP URL over HTTP (another deployment's publisher), signature-checked;
4. last resort: a CRL built here from the store's entry DER with cRLNumber 0 (so any published
   CRL is "newer" for relying parties) and a short nextUpdate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography import x509

from ca.ports import ServiceKeys
from ocsp.crl import CrlIssuer, build_crl

log = logging.getLogger("ikepki.push.crl")


def build_local_crl(issuer: Any, entries: Iterable[bytes], now: datetime, next_update: timedelta) -> bytes:
    """CertificateList DER (RFC 5280 §5.1) with the given revokedCertificates entries and cRLNumber 0,
    built by the one CRL builder (:func:`ocsp.crl.build_crl`), which lints the TBSCertList and each entry
    (:mod:`ocsp.crl_lint`) before the CA key signs it."""
    der, _count = build_crl(CrlIssuer(issuer.id, issuer.certificate, issuer.key), list(entries), 0, now,
                            now + next_update)
    return der


class CrlSource:
    """Fetch-or-build, per issuer, a CRL that lists the serials being pushed."""

    def __init__(self, deployment: ServiceKeys, mode: str = "auto", timeout: float = 2.0, next_update_minutes: int = 10
                 ) -> None:
        self.dep = deployment
        self.mode = mode
        self.timeout = timeout
        self.next_update = timedelta(minutes=next_update_minutes)

    def crl_for(self, issuer_id: str, must_list: set[int]) -> bytes | None:
        if self.mode == "none" or issuer_id not in self.dep.issuers:
            return None
        issuer = self.dep.issuers[issuer_id]
        if self.mode == "auto":
            der = self._published(issuer_id, must_list) or self._publish(issuer_id, must_list)
            if der is not None:
                return der
        if self.mode in ("http", "auto"):
            fetched = self._fetch(issuer, must_list)
            if fetched is not None or self.mode == "http":
                return fetched
        entries = (der for _serial, der in self.dep.store.revoked_entries(issuer_id))
        return build_local_crl(issuer, entries, self.dep.clock.now(), self.next_update)

    def _published(self, issuer_id: str, must_list: set[int]) -> bytes | None:
        try:
            from sqlalchemy import select

            from ocsp.crl_publisher import CRLS

            with self.dep.db.read() as conn:
                row = conn.execute(select(CRLS.c.der).where(CRLS.c.issuer_id == issuer_id, CRLS.c.kind == "full")
                                   .order_by(CRLS.c.crl_number.desc()).limit(1)).first()
        except Exception:  # the CRL publisher's tables are not there (older schema): other sources
            log.debug("no published CRLs for %s", issuer_id, exc_info=True)
            return None
        if row is None:
            return None
        der = bytes(row.der)
        crl = x509.load_der_x509_crl(der)
        if any(crl.get_revoked_certificate_by_serial_number(s) is None for s in must_list):
            return None
        return der

    def _publish(self, issuer_id: str, must_list: set[int]) -> bytes | None:
        try:
            from ocsp.crl_publisher import CrlPublisher

            log.info("push: %s", CrlPublisher(self.dep).publish_full(issuer_id, is_base=False))
        except Exception:
            log.warning("could not publish a fresh CRL for %s", issuer_id, exc_info=True)
        return self._published(issuer_id, must_list)

    def _fetch(self, issuer: Any, must_list: set[int]) -> bytes | None:
        try:
            resp = httpx.get(issuer.urls.crl, timeout=self.timeout)
            if resp.status_code != 200:
                return None
            crl = x509.load_der_x509_crl(resp.content)
        except (httpx.HTTPError, ValueError):
            return None
        if crl.issuer != issuer.name or not crl.is_signature_valid(issuer.certificate.public_key()):
            log.warning("CRL at %s is not signed by %s; building one locally", issuer.urls.crl, issuer.id)
            return None
        if any(crl.get_revoked_certificate_by_serial_number(s) is None for s in must_list):
            return None  # the published CRL is not fresh yet
        return resp.content
