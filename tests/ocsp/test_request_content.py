"""Issue 21 defect 4: OCSP requests carrying unexpected content, and the pre-signed cache's memory.

Before the fix the responder cached answers by the whole request body, so unique padding (an
unknown non-critical extension, or an unchecked ``optionalSignature``) made every request a new
cache entry. Now the cache is keyed by the CertID and bounded in bytes; signed requests are
refused (unauthorized), unknown critical extensions and malformed signatures are malformedRequest
(RFC 6960 §2.3, §4.1.2, §4.4)."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from collections.abc import Iterable

from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsp.der import der_bool, der_integer, der_octets, der_oid, der_seq, der_tlv, explicit
from ocsp.request import MalformedRequest, canonical_cert_id, parse_request
from ocsp.responder import Responder
from ocsp.settings import OcspSettings
from tests.ocsp.ocsp_helpers import Pki
from tests.ocsp.test_bad_input import cert_id, our_cert_id

ECDSA_SHA256 = der_seq(der_oid("1.2.840.10045.4.3.2"))
NONCE = der_oid("1.3.6.1.5.5.7.48.1.2")
UNKNOWN_EXT = der_oid("1.3.6.1.4.1.99999.1")
SERVICE_LOCATOR = der_oid("1.3.6.1.5.5.7.48.1.7")
REQUESTOR = explicit(1, der_tlv(0x82, b"client.example.test"))  # [1] { dNSName }


def extension(oid: bytes, value: bytes, critical: bool = False) -> bytes:
    return der_seq(oid, *([der_bool(True)] if critical else []), der_octets(value))


def request(cid: bytes, *, exts: list[bytes] | None = None, single_exts: list[bytes] | None = None,
            name: bytes = b"", signature: bytes | None = None) -> bytes:
    single = der_seq(cid, *([explicit(0, der_seq(*single_exts))] if single_exts else []))
    tbs = der_seq(name, der_seq(single), *([explicit(2, der_seq(*exts))] if exts else []))
    return der_seq(tbs, *([explicit(0, signature)] if signature is not None else []))


def signature(sig: bytes = b"\x00" + os.urandom(64), certs: bytes = b"") -> bytes:
    return der_seq(ECDSA_SHA256, der_tlv(0x03, sig), certs)


def run(responder: Responder, bodies: Iterable[bytes]) -> list[ocsp.OCSPResponseStatus]:
    async def go() -> list[bytes]:
        try:
            return [(await responder.respond(b)).body for b in bodies]
        finally:
            await responder.maintenance.stop()

    return [ocsp.load_der_ocsp_response(b).response_status for b in asyncio.run(go())]


def test_unique_padding_does_not_grow_memory(pki: Pki) -> None:
    """300 requests for one CertID, each with ~10 KB of unique padding in a non-critical extension
    (which RFC 6960 §4.4 says to ignore): answered, and nothing per request is retained."""
    cert, _ = pki.issue()
    cid = our_cert_id(pki, cert.serial_number)
    bodies = (request(cid, exts=[extension(UNKNOWN_EXT, os.urandom(10_000))]) for _ in range(300))  # made lazily
    responder = Responder(pki.dep, OcspSettings())
    try:
        assert run(responder, [request(cid)]) == [ocsp.OCSPResponseStatus.SUCCESSFUL]  # warm: signer, cache
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            statuses = run(responder, bodies)
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert set(statuses) == {ocsp.OCSPResponseStatus.SUCCESSFUL}
        assert retained < 500_000, f"{retained} bytes retained after 3 MB of padded requests"
        assert len(responder.cache) == 1
    finally:
        responder.close()


def test_signed_and_unexpected_content_refused(pki: Pki) -> None:
    cert, _ = pki.issue()
    cid = our_cert_id(pki, cert.serial_number)
    S = ocsp.OCSPResponseStatus
    cases = {
        "plain": (request(cid), S.SUCCESSFUL),
        "requestorName, unsigned": (request(cid, name=REQUESTOR), S.SUCCESSFUL),
        "unknown non-critical extension": (request(cid, exts=[extension(UNKNOWN_EXT, b"x")]), S.SUCCESSFUL),
        "non-critical service locator": (request(cid, single_exts=[extension(SERVICE_LOCATOR, b"\x30\x00")]),
                                         S.SUCCESSFUL),
        "signed": (request(cid, name=REQUESTOR, signature=signature()), S.UNAUTHORIZED),
        "signed with certs": (request(cid, name=REQUESTOR, signature=signature(
            certs=explicit(0, der_seq(der_seq(der_integer(1)))))), S.UNAUTHORIZED),
        "signed without requestorName": (request(cid, signature=signature()), S.MALFORMED_REQUEST),
        "signature padding": (request(cid, name=REQUESTOR, signature=der_seq(ECDSA_SHA256, der_tlv(0x03, b"\x00"),
                                                                             der_octets(b"x" * 9000))),
                              S.MALFORMED_REQUEST),
        "signature not a Signature": (request(cid, name=REQUESTOR, signature=der_octets(os.urandom(9000))),
                                      S.MALFORMED_REQUEST),
        "unknown critical extension": (request(cid, exts=[extension(UNKNOWN_EXT, b"x", critical=True)]),
                                       S.MALFORMED_REQUEST),
        "unknown critical single extension": (request(cid, single_exts=[extension(UNKNOWN_EXT, b"", True)]),
                                              S.MALFORMED_REQUEST),
        "duplicate extension": (request(cid, exts=[extension(UNKNOWN_EXT, b"a"), extension(UNKNOWN_EXT, b"b")]),
                                S.MALFORMED_REQUEST),
        "critical FALSE encoded": (request(cid, exts=[der_seq(UNKNOWN_EXT, der_bool(False), der_octets(b""))]),
                                   S.MALFORMED_REQUEST),
        "empty requestorName": (request(cid, name=explicit(1, b"")), S.MALFORMED_REQUEST),
        "trailing data": (request(cid) + b"\x00", S.MALFORMED_REQUEST),
        "trailing data in Request": (der_seq(der_seq(der_seq(der_seq(cid, explicit(0, der_seq()), b"\x05\x00")))),
                                     S.MALFORMED_REQUEST),
    }
    responder = Responder(pki.dep, OcspSettings())
    try:
        got = run(responder, [body for body, _ in cases.values()])
    finally:
        responder.close()
    assert dict(zip(cases, got, strict=True)) == {name: want for name, (_, want) in cases.items()}


def test_cache_bounded_by_bytes(pki: Pki) -> None:
    responder = Responder(pki.dep, OcspSettings(cache_max_bytes=64 * 1024))
    try:
        serials = [int.from_bytes(os.urandom(16), "big") | 1 for _ in range(120)]
        statuses = run(responder, [request(our_cert_id(pki, s)) for s in serials])
        assert set(statuses) == {ocsp.OCSPResponseStatus.SUCCESSFUL}
        assert 0 < len(responder.cache) < 120
        size = sum(e.size(k) for k, e in responder.cache.items())
        assert responder.cache.bytes == size <= 64 * 1024
        assert sum(len(v) for v in responder.cache.by_serial.values()) == len(responder.cache)
    finally:
        responder.close()


# -- the framing-only fast path agrees with the strict parser ----------------------------------

def _agrees(body: bytes) -> None:
    key = canonical_cert_id(body)
    try:
        req = parse_request(body)
    except MalformedRequest:
        return  # the fast path may name a key, but only keys a strict parse stored can hit
    if key is not None:
        assert len(req.cert_ids) == 1 and req.cert_ids[0].der == key
        assert req.nonce_ext_value is None and not req.signed


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=2**159), st.binary(max_size=400), st.data())
def test_canonical_cert_id_matches_parser(serial: int, pad: bytes, data: st.DataObject) -> None:
    cid = cert_id(serial)
    plain = request(cid)
    assert canonical_cert_id(plain) == cid
    assert canonical_cert_id(request(cid, exts=[extension(UNKNOWN_EXT, pad)])) is None
    assert canonical_cert_id(request(cid, name=REQUESTOR)) is None
    for body in (plain, request(cid, exts=[extension(NONCE, der_octets(pad[:32] or b"x"))])):
        pos = data.draw(st.integers(0, len(body) - 1))
        mutated = body[:pos] + bytes([body[pos] ^ data.draw(st.integers(1, 255))]) + body[pos + 1:]
        for candidate in (body, mutated, body[:pos], body + pad[:3]):
            _agrees(candidate)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_canonical_cert_id_random_bytes(data: bytes) -> None:
    _agrees(data)
    _agrees(der_seq(der_seq(der_seq(der_seq(data)))))


