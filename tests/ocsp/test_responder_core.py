"""The responder and publisher in-process against the session deployment (real HSM keys, real
SQLite): extended revoked for non-issued serials, tryLater when the signer fails, mixed issuers,
signer rotation, leases, and CRL numbers under two concurrent publishers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509 import ocsp
from sqlalchemy import select

from ca.der import der_integer, der_octets, der_seq
from ca.errors import ErrorKind, PKIError
from ca.keys.signer import SigningKey
from ocsp import lease
from ocsp.crl_publisher import CRLS, CrlPublisher
from ocsp.request import parse_request
from ocsp.responder import Responder
from ocsp.settings import OcspSettings
from ocsp.signers import SIGNER_CERTS, Signer, issuer_hashes, load_signer, rotate
from tests.ocsp.ocsp_helpers import Pki
from tests.ocsp.test_bad_input import ocsp_request


def request_for(dep: Any, issuer_id: str, serials: list[int], nonce: bool = False) -> bytes:
    _, nh, kh = issuer_hashes(dep.root if issuer_id == "root" else dep.issuers[issuer_id].certificate)[0]
    alg = bytes.fromhex("300906052b0e03021a0500")
    ids = [der_seq(alg, der_octets(nh), der_octets(kh), der_integer(s)) for s in serials]
    return ocsp_request(ids, der_octets(os.urandom(16)) if nonce else None)


def respond(responder: Responder, body: bytes) -> ocsp.OCSPResponse:
    async def go() -> bytes:
        try:
            return (await responder.respond(body)).body
        finally:
            responder.maintenance.cancel()

    return ocsp.load_der_ocsp_response(asyncio.run(go()))


def test_non_issued_serial_as_extended_revoked(pki: Pki) -> None:
    responder = Responder(pki.dep, OcspSettings(non_issued="revoked"))
    try:
        resp = respond(responder, request_for(pki.dep, "ec", [int.from_bytes(os.urandom(16), "big")]))
        assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert resp.revocation_reason is x509.ReasonFlags.certificate_hold
        assert resp.revocation_time_utc == datetime(1970, 1, 1, tzinfo=UTC)
        oids = [e.oid.dotted_string for e in resp.extensions]
        assert "1.3.6.1.5.5.7.48.1.9" in oids  # RFC 6960 §4.4.8 extended revoke
        signer = load_signer(pki.dep, "ec")
        assert resp.certificates[0] == signer.certificate
        signer.certificate.public_key().verify(resp.signature, resp.tbs_response_bytes,  # type: ignore[union-attr]
                                               ec.ECDSA(hashes.SHA256()))
    finally:
        responder.close()


def test_non_issued_serial_as_unauthorized_costs_no_signature(pki: Pki) -> None:
    """``ocsp.non_issued: unauthorized``: made-up serials get the unsigned ``unauthorized`` status on
    every path (pre-signed, nonce, several CertIDs), nothing is signed or cached; issued ones are answered."""
    responder = Responder(pki.dep, OcspSettings(non_issued="unauthorized"))
    try:
        made_up = [int.from_bytes(os.urandom(16), "big") for _ in range(3)]
        for body in (request_for(pki.dep, "ec", made_up[:1]), request_for(pki.dep, "ec", made_up[1:2], nonce=True),
                     request_for(pki.dep, "ec", made_up), request_for(pki.dep, "root", made_up[:1])):
            assert respond(responder, body).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
        assert responder.stats["signed"] == 0 and len(responder.cache) == 0
        assert responder.stats["unauthorized"] == 4
        cert, _ = pki.issue()
        mixed = respond(responder, request_for(pki.dep, "ec", [cert.serial_number, made_up[0]]))
        assert mixed.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED  # one answer covers both
        resp = respond(responder, request_for(pki.dep, "ec", [cert.serial_number], nonce=True))
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
        ca = pki.dep.issuers["ec"].certificate
        root = respond(responder, request_for(pki.dep, "root", [ca.serial_number]))
        assert root.certificate_status is ocsp.OCSPCertStatus.GOOD
    finally:
        responder.close()


class FailingHsmKey(ec.EllipticCurvePrivateKey):
    """Stands in for an HSM that stopped answering: signing raises what the PKCS#11 adapter raises."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def sign(self, data: bytes, signature_algorithm: Any) -> bytes:
        raise PKIError(ErrorKind.UNAVAILABLE, "HSM operation failed: DeviceRemoved()")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._key.curve

    @property
    def key_size(self) -> int:
        return 256

    def exchange(self, *args: Any) -> bytes:
        raise NotImplementedError

    def private_numbers(self) -> Any:
        raise NotImplementedError

    def private_bytes(self, *args: Any) -> bytes:
        raise NotImplementedError

    def __copy__(self) -> FailingHsmKey:
        return self

    def __deepcopy__(self, memo: Any) -> FailingHsmKey:
        return self


def test_try_later_when_the_signer_fails_and_mixed_issuers(pki: Pki) -> None:
    responder = Responder(pki.dep)
    try:
        good = load_signer(pki.dep, "ec")
        responder.reload_signers()
        responder.signers.by_issuer["ec"] = Signer("ec", SigningKey("software:failing", FailingHsmKey()),
                                                   good.certificate, True)
        responder.signers.loaded_at = time.monotonic()
        cert, _ = pki.issue()
        for nonce in (True, False):
            resp = respond(responder, request_for(pki.dep, "ec", [cert.serial_number], nonce=nonce))
            assert resp.response_status is ocsp.OCSPResponseStatus.TRY_LATER
        mixed = request_for(pki.dep, "ec", [cert.serial_number])
        ids = [c.der for c in parse_request(mixed).cert_ids]
        ids += [c.der for c in parse_request(request_for(pki.dep, "rsa", [5])).cert_ids]
        assert respond(responder, ocsp_request(ids)).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    finally:
        responder.close()


def test_an_offline_root_key_is_retried_every_few_seconds_not_per_request(pki: Pki,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests about the issuing CAs while the root key cannot be loaded: tryLater, one reload
    attempt for all of them (not one HSM and store round per request), the issuing CAs unaffected."""
    import ocsp.signers as signers_module

    attempts: list[str] = []
    real = signers_module.load_signer

    def root_offline(dep: Any, issuer_id: str) -> Signer:
        attempts.append(issuer_id)
        if issuer_id == "root":
            raise PKIError(ErrorKind.UNAVAILABLE, "HSM operation failed: the root key is offline")
        return real(dep, issuer_id)

    monkeypatch.setattr(signers_module, "load_signer", root_offline)
    responder = Responder(pki.dep)
    ca_serial = pki.dep.issuers["ec"].certificate.serial_number
    try:
        async def go() -> list[ocsp.OCSPResponse]:
            try:
                bodies = await asyncio.gather(*(responder.respond(request_for(pki.dep, "root", [ca_serial],
                                                                              nonce=True)) for _ in range(20)))
                bodies += [await responder.respond(request_for(pki.dep, "root", [ca_serial], nonce=True))
                           for _ in range(20)]
                return [ocsp.load_der_ocsp_response(b.body) for b in bodies]
            finally:
                responder.maintenance.cancel()

        answers = asyncio.run(go())
        assert {a.response_status for a in answers} == {ocsp.OCSPResponseStatus.TRY_LATER}
        assert attempts.count("root") == 1, attempts
        cert, _ = pki.issue()
        assert respond(responder, request_for(pki.dep, "ec", [cert.serial_number])).certificate_status \
            is ocsp.OCSPCertStatus.GOOD
    finally:
        responder.close()


def test_signer_rotation_is_recorded_and_used(pki: Pki) -> None:
    before = load_signer(pki.dep, "attestation").certificate
    new = rotate(pki.dep, "attestation")
    assert new.serial_number != before.serial_number and new.public_key() == before.public_key()
    assert x509.ExtendedKeyUsageOID.OCSP_SIGNING in new.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    with pki.dep.db.read() as conn:
        serials = {r.serial for r in conn.execute(select(SIGNER_CERTS.c.serial).where(
            SIGNER_CERTS.c.issuer_id == "attestation"))}
    assert format(new.serial_number, "x") in serials
    assert load_signer(pki.dep, "attestation").certificate == new
    assert x509.load_pem_x509_certificates(pki.dep.path("services/ocsp-attestation.pem").read_bytes())[0] == new
    responder = Responder(pki.dep)
    try:
        resp = respond(responder, request_for(pki.dep, "attestation", [7], nonce=True))
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and resp.certificates[0] == new
    finally:
        responder.close()


def test_lease_has_one_holder(pki: Pki) -> None:
    db, now, ttl = pki.dep.db, datetime.now(UTC), timedelta(seconds=30)
    name = f"test-{os.urandom(4).hex()}"
    assert lease.acquire(db, name, "a", now, ttl)
    assert not lease.acquire(db, name, "b", now, ttl)
    assert lease.acquire(db, name, "a", now + timedelta(seconds=10), ttl)  # renewal
    assert not lease.acquire(db, name, "b", now + timedelta(seconds=35), ttl)
    assert lease.acquire(db, name, "b", now + timedelta(seconds=41), ttl)  # expired: taken over
    lease.release(db, name, "b")
    assert lease.acquire(db, name, "c", now, ttl)


def test_crl_numbers_strictly_increase_with_two_publishers(pki: Pki) -> None:
    """Two publishers racing (as two replicas would without the lease) never share a CRL number."""
    publishers = [CrlPublisher(pki.dep), CrlPublisher(pki.dep)]
    errors: list[BaseException] = []

    def work(p: CrlPublisher) -> None:
        try:
            for _ in range(4):
                p.publish_full("attestation", is_base=False)
                p.publish_delta("attestation")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in publishers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with pki.dep.db.read() as conn:
        rows = conn.execute(select(CRLS.c.crl_number, CRLS.c.der).where(CRLS.c.issuer_id == "attestation")
                            .order_by(CRLS.c.id)).all()
    numbers = [r.crl_number for r in rows]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    for row in rows[-3:]:
        crl = x509.load_der_x509_crl(bytes(row.der))
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == row.crl_number
        assert crl.is_signature_valid(pki.dep.issuers["attestation"].certificate.public_key())  # type: ignore[arg-type]


def test_expired_delegated_cert_falls_back_to_the_ca_key(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """If rotation failed until the signer certificate (nearly) expired, the CA signs itself
    (RFC 6960 §2.6) instead of handing out responses relying parties must reject."""
    from ca.clock import FixedClock

    monkeypatch.setattr(pki.dep, "clock", FixedClock(datetime.now(UTC) + timedelta(days=8)))
    signer = load_signer(pki.dep, "rsa")
    assert not signer.delegated and signer.certificate == pki.dep.issuers["rsa"].certificate
    responder = Responder(pki.dep)
    try:
        resp = respond(responder, request_for(pki.dep, "rsa", [99], nonce=True))
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and resp.certificates == []
        from cryptography.hazmat.primitives.asymmetric import padding

        pki.dep.issuers["rsa"].certificate.public_key().verify(  # type: ignore[call-arg]
            resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())
    finally:
        responder.close()


def test_concurrent_nonce_requests_are_batched_and_each_answered_exactly(pki: Pki) -> None:
    """64 nonce requests at once (good, revoked, unknown, two issuers) through the batch thread: one
    response per request with its own nonce, the right status, a valid signature by the delegated
    signer, and a revocation visible at once (the status is read when the batch is signed)."""
    from ca.model import RevocationReason

    responder = Responder(pki.dep)
    good, _ = pki.issue()
    revoked, _ = pki.issue()
    pki.revoke(revoked, RevocationReason.keyCompromise)
    cases = [("ec", good.serial_number, ocsp.OCSPCertStatus.GOOD),
             ("ec", revoked.serial_number, ocsp.OCSPCertStatus.REVOKED),
             ("ec", 0x7EADBEEF, ocsp.OCSPCertStatus.UNKNOWN),
             ("rsa", 0x7EADBEEF, ocsp.OCSPCertStatus.UNKNOWN)]
    bodies = [(case, request_for(pki.dep, case[0], [case[1]], nonce=True)) for case in cases * 16]

    async def go() -> list[bytes]:
        try:
            return [a.body for a in await asyncio.gather(*(responder.respond(b) for _, b in bodies))]
        finally:
            responder.maintenance.cancel()

    try:
        answers = asyncio.run(go())
        for ((issuer_id, serial, status), body), der in zip(bodies, answers, strict=True):
            resp = ocsp.load_der_ocsp_response(der)
            assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            assert resp.serial_number == serial and resp.certificate_status is status
            nonce = ocsp.load_der_ocsp_request(body).extensions.get_extension_for_class(x509.OCSPNonce).value
            assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value == nonce
            signer = resp.certificates[0]
            public = signer.public_key()
            if isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm))
            else:
                public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),  # type: ignore[call-arg]
                              resp.signature_hash_algorithm)
            assert signer.issuer == pki.dep.issuers[issuer_id].certificate.subject
        assert responder.fresh.nonce_jobs.done == len(bodies)
        pki.revoke(good, RevocationReason.superseded)
        again = respond(responder, request_for(pki.dep, "ec", [good.serial_number], nonce=True))
        assert again.certificate_status is ocsp.OCSPCertStatus.REVOKED
    finally:
        responder.close()
