"""The responder's maintenance loop (ocsp/maintenance.py) and pre-signer (ocsp/presigner.py) in
process, against the session deployment (SoftHSM, SQLite): a revocation re-signs every cached
CertID form and the SHA-1 one before anyone asks; refresh re-signs what is asked for and drops
what is idle; a status that changes while its response is signed is served but not cached."""

from __future__ import annotations

import asyncio
import threading
import time

from cryptography.x509 import ReasonFlags, ocsp

from ca.der import der_integer, der_octets, der_oid, der_seq
from ca.model import RevocationReason
from ocsp.maintenance import SHA1_CERTID_ALG, cert_id_der
from ocsp.responder import Responder
from ocsp.responder_der import CertState
from ocsp.settings import OcspSettings
from ocsp.signers import issuer_hashes
from ocsp.status_source import StatusSource
from tests.ocsp.ocsp_helpers import Pki
from tests.ocsp.test_request_content import request

SHA256_ALG = der_seq(der_oid("2.16.840.1.101.3.4.2.1"), b"\x05\x00")


def cert_ids(pki: Pki, serial: int) -> tuple[bytes, bytes]:
    """(SHA-256 CertID, SHA-1 CertID) of ``serial`` under the ec issuing CA."""
    hashes = {name: (nh, kh) for name, nh, kh in issuer_hashes(pki.dep.issuers["ec"].certificate)}
    nh, kh = hashes["sha256"]
    return (der_seq(SHA256_ALG, der_octets(nh), der_octets(kh), der_integer(serial)),
            cert_id_der(SHA1_CERTID_ALG, *hashes["sha1"], serial))


def cached_status(responder: Responder, key: bytes) -> ocsp.OCSPResponse:
    entry = responder.cache.fresh(key, time.time())
    assert entry is not None, "not in the cache"
    return ocsp.load_der_ocsp_response(entry.body)


def test_a_revocation_re_signs_every_cached_form_before_anyone_asks(pki: Pki) -> None:
    cert, _ = pki.issue()
    sha256_id, sha1_id = cert_ids(pki, cert.serial_number)
    responder = Responder(pki.dep, OcspSettings())

    async def go() -> int:
        await responder.respond(request(sha256_id))
        await responder.maintenance.stop()  # this test polls itself
        assert cached_status(responder, sha256_id).certificate_status is ocsp.OCSPCertStatus.GOOD
        assert sha1_id not in responder.cache.entries
        await asyncio.to_thread(pki.revoke, cert, RevocationReason.keyCompromise)
        return await responder.maintenance.poll_feed()

    try:
        signed = responder.stats["signed"]
        assert asyncio.run(go()) >= 1
        for key in (sha256_id, sha1_id):
            resp = cached_status(responder, key)
            assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
            assert resp.revocation_reason is ReasonFlags.key_compromise and resp.serial_number == cert.serial_number
        assert responder.stats["signed"] == signed + 3  # first answer + both forms again
    finally:
        responder.close()


def test_refresh_re_signs_what_is_asked_for_and_drops_what_is_idle(pki: Pki) -> None:
    (asked, _), (idle, _) = (cert_ids(pki, pki.issue()[0].serial_number) for _ in range(2))
    responder = Responder(pki.dep, OcspSettings())
    validity = responder.settings.validity_seconds

    async def go() -> int:
        await responder.respond(request(asked))
        await responder.respond(request(idle))
        await responder.maintenance.stop()
        for key, e in responder.cache.items():  # both past half their validity
            e.this_update, e.next_update = time.time() - 0.6 * validity, time.time() + 0.4 * validity
            if key == idle:
                e.last_hit = time.monotonic() - validity - 1
        return await responder.maintenance.refresh()

    try:
        assert asyncio.run(go()) == 1
        assert idle not in responder.cache.entries
        entry = responder.cache.entries[asked]
        assert entry.next_update - entry.this_update > 0.9 * validity  # a new response, full validity
    finally:
        responder.close()


class GatedStatus(StatusSource):
    """Holds the first status read until the test lets it go."""

    def __init__(self, pki: Pki) -> None:
        super().__init__(pki.dep.db, ())
        self.entered, self.go = threading.Event(), threading.Event()

    def lookup(self, issuer_id: str, serials: list[int]) -> list[CertState]:
        self.entered.set()
        assert self.go.wait(30)
        return super().lookup(issuer_id, serials)


def test_a_status_that_changes_while_signing_is_served_but_not_cached(pki: Pki) -> None:
    serial = pki.issue()[0].serial_number
    key, _ = cert_ids(pki, serial)
    status = GatedStatus(pki)
    responder = Responder(pki.dep, OcspSettings(), status)

    async def go() -> None:
        signing = asyncio.create_task(responder.presigner.presign("ec", key, serial))
        assert await asyncio.to_thread(status.entered.wait, 30)
        responder.presigner.invalidate("ec", serial)  # what a feed poll does when the serial is revoked now
        status.go.set()
        entry = await signing
        assert ocsp.load_der_ocsp_response(entry.body).certificate_status is ocsp.OCSPCertStatus.GOOD
        assert key not in responder.cache.entries
        await responder.presigner.presign("ec", key, serial)  # the next one is cached again
        assert key in responder.cache.entries

    try:
        asyncio.run(go())
    finally:
        responder.close()


def test_a_caller_that_goes_away_does_not_cancel_the_signature_others_wait_for(pki: Pki) -> None:
    """Two requests for one CertID share one signature; the first client disconnecting (its
    handler cancelled) leaves the second with its answer, and the response is cached."""
    cert, _ = pki.issue()
    sha256_id, _ = cert_ids(pki, cert.serial_number)
    responder = Responder(pki.dep, OcspSettings())

    async def go() -> tuple[bool, bytes]:
        first = asyncio.create_task(responder.respond(request(sha256_id)))
        second = asyncio.create_task(responder.respond(request(sha256_id)))
        await asyncio.sleep(0)  # both are waiting on the same pre-signing now
        first.cancel()
        answer = await second
        await responder.maintenance.stop()
        return first.cancelled(), answer.body

    try:
        signed = responder.stats["signed"]
        cancelled, body = asyncio.run(go())
        assert cancelled
        resp = ocsp.load_der_ocsp_response(body)
        assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD and resp.serial_number == cert.serial_number
        assert cached_status(responder, sha256_id).serial_number == cert.serial_number
        assert responder.stats["signed"] == signed + 1  # one signature for both
    finally:
        responder.close()
