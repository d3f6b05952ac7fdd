"""Bad input to the OCSP/CRL edge and the request parser: malformedRequest or 4xx, never a 5xx,
and the server keeps answering. The parser is fuzzed with hypothesis."""

from __future__ import annotations

import base64
import contextlib
import os

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.der import der_integer, der_octets, der_oid, der_seq, der_tlv, explicit
from ocsp.request import MalformedRequest, parse_request
from tests.ocsp.ocsp_helpers import Pki

SHA1_ALG = bytes.fromhex("300906052b0e03021a0500")
OCSP_HEADERS = {"Content-Type": "application/ocsp-request"}


def cert_id(serial: int, name_hash: bytes = b"\x11" * 20, key_hash: bytes = b"\x22" * 20) -> bytes:
    return der_seq(SHA1_ALG, der_octets(name_hash), der_octets(key_hash), der_integer(serial))


def ocsp_request(cert_ids: list[bytes], nonce: bytes | None = None) -> bytes:
    tbs = [der_seq(*(der_seq(c) for c in cert_ids))]
    if nonce is not None:
        tbs.append(explicit(2, der_seq(der_seq(der_oid("1.3.6.1.5.5.7.48.1.2"), der_octets(nonce)))))
    return der_seq(der_seq(*tbs))


def our_cert_id(pki: Pki, serial: int) -> bytes:
    from ocsp.signers import issuer_hashes

    _, nh, kh = issuer_hashes(pki.dep.issuers["ec"].certificate)[0]
    return cert_id(serial, nh, kh)


def status(body: bytes) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(body).response_status


def post(pki: Pki, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{pki.url}/ocsp", content=body, headers=OCSP_HEADERS if headers is None else headers, timeout=30)


@pytest.fixture(scope="module")
def valid_request(pki: Pki) -> bytes:
    cert, _ = pki.issue()
    issuer = pki.dep.issuers["ec"].certificate
    return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)


def test_truncated_and_garbage_posts(pki: Pki, valid_request: bytes) -> None:
    for body in (valid_request[:-1], valid_request[:10], valid_request + b"\x00", b"", b"\x30\x80\x00\x00",
                 os.urandom(300), b"\x30\x84\xff\xff\xff\xff"):
        r = post(pki, body)
        assert r.status_code == 200 and status(r.content) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST, body.hex()
    assert status(post(pki, valid_request).content) is ocsp.OCSPResponseStatus.SUCCESSFUL


def test_wrong_content_type_huge_body_and_methods(pki: Pki, valid_request: bytes) -> None:
    assert post(pki, valid_request, {"Content-Type": "application/json"}).status_code == 415
    assert post(pki, valid_request, {}).status_code == 415
    assert post(pki, b"\x30" * 200_000).status_code == 413
    assert httpx.put(f"{pki.url}/ocsp", content=valid_request, timeout=10).status_code == 405
    assert httpx.delete(f"{pki.url}/crl/ec.crl", timeout=10).status_code == 405


def test_too_many_certids(pki: Pki) -> None:
    serials = [int.from_bytes(os.urandom(8), "big") | 1 for _ in range(1000)]
    r = post(pki, ocsp_request([our_cert_id(pki, s) for s in serials]))  # ~60 kB: over the body limit
    assert r.status_code in (413, 200)
    if r.status_code == 200:
        assert status(r.content) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    r = post(pki, ocsp_request([our_cert_id(pki, s) for s in serials[:33]]))
    assert r.status_code == 200 and status(r.content) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    r = post(pki, ocsp_request([our_cert_id(pki, s) for s in serials[:32]]))
    assert r.status_code == 200 and status(r.content) is ocsp.OCSPResponseStatus.SUCCESSFUL


def test_nonce_bounds(pki: Pki) -> None:
    cid = our_cert_id(pki, 12345)
    for bad in (b"", b"\x04\x00", der_octets(b"x" * 33)):
        r = post(pki, ocsp_request([cid], nonce=bad))
        assert status(r.content) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST, bad.hex()
    nonce = der_octets(os.urandom(32))
    r = post(pki, ocsp_request([cid], nonce=nonce))
    parsed = ocsp.load_der_ocsp_response(r.content)
    assert parsed.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    ext = parsed.extensions.get_extension_for_class(x509.OCSPNonce)
    assert ext.value.nonce == nonce[2:]


def test_bad_get_paths(pki: Pki, valid_request: bytes) -> None:
    junk = base64.b64encode(b"junk").decode()
    for path in ("/ocsp/%%%", "/ocsp/not*base64!", "/ocsp/" + "A" * 5000, "/ocsp/" + junk):
        r = httpx.get(pki.url + path, timeout=10)
        assert 400 <= r.status_code < 500 or status(r.content) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST, path
    r = httpx.get(f"{pki.url}/ocsp/{base64.urlsafe_b64encode(valid_request).decode()}", timeout=10)
    assert r.status_code == 200 and status(r.content) is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert httpx.get(f"{pki.url}/healthz", timeout=10).status_code == 200


def test_unsupported_hash_and_foreign_issuer(pki: Pki) -> None:
    md5_alg = der_seq(der_oid("1.2.840.113549.2.5"), b"\x05\x00")
    body = ocsp_request([der_seq(md5_alg, der_octets(b"\x00" * 16), der_octets(b"\x00" * 16), der_integer(5))])
    assert status(post(pki, body).content) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert status(post(pki, ocsp_request([cert_id(5)])).content) is ocsp.OCSPResponseStatus.UNAUTHORIZED


# -- parser fuzzing (in-process) ----------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_parser_random_bytes(data: bytes) -> None:
    try:
        req = parse_request(data)
    except MalformedRequest:
        return
    assert 1 <= len(req.cert_ids) <= 32


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2**159), min_size=1, max_size=40),
       st.one_of(st.none(), st.binary(min_size=0, max_size=40)), st.data())
def test_parser_mutated_valid_requests(serials: list[int], nonce: bytes | None, data: st.DataObject) -> None:
    body = ocsp_request([cert_id(s) for s in serials], der_octets(nonce) if nonce is not None else None)
    try:
        req = parse_request(body)
    except MalformedRequest:
        assert len(serials) > 32 or (nonce is not None and not 1 <= len(nonce) <= 32)
    else:
        assert [c.serial for c in req.cert_ids] == serials
        assert req.nonce_ext_value == (der_octets(nonce) if nonce is not None else None)
    # flip one byte / truncate: still only MalformedRequest or a parse
    pos = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    mutated = body[:pos] + bytes([body[pos] ^ data.draw(st.integers(1, 255))]) + body[pos + 1:]
    for candidate in (mutated, body[:pos]):
        with contextlib.suppress(MalformedRequest):
            parse_request(candidate)


def test_parser_agrees_with_cryptography() -> None:
    """openssl/cryptography-built requests parse to the same CertID fields."""
    for h in (hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        built = ocsp.OCSPRequestBuilder().add_certificate_by_hash(b"\x01" * h.digest_size, b"\x02" * h.digest_size,
                                                                  2**150 + 7, h)
        built = built.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False).build()
        req = parse_request(built.public_bytes(serialization.Encoding.DER))
        assert req.cert_ids[0].serial == 2**150 + 7 and req.cert_ids[0].hash_name == h.name
        assert req.nonce_ext_value == der_tlv(0x04, built.extensions.get_extension_for_class(x509.OCSPNonce)
                                              .value.nonce)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_get_path_decoder_never_raises(text: str) -> None:
    from ocsp.http import decode_get_path, parse_crl_path

    der = decode_get_path(text)
    if der is not None:
        with contextlib.suppress(MalformedRequest):
            parse_request(der)
    target = parse_crl_path("/crl/" + text, text.encode(errors="replace"), frozenset({"ec", "root"}))
    assert target is None or target[0] in {"ec", "root"}
