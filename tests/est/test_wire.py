"""Pure EST wire helpers: hypothesis fuzzing of every decoder (only PKIError may escape) and
round trips of what we encode."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.csr import parse_csr
from ca.errors import ErrorKind, PKIError
from enrollment.est import wire
from enrollment.est.auth import PasswordCache, hash_password, verify_password
from tests.est.est_helpers import make_csr, new_key

CSR = make_csr(new_key(), "wire-1", ["DNS:wire-1.example.test"])


def decode_and_parse(body: bytes) -> None:
    try:
        parse_csr(wire.decode_pkcs10_body(body))
    except PKIError as exc:
        assert exc.kind in (ErrorKind.BAD_REQUEST, ErrorKind.BAD_CSR)
        assert exc.detail and "\n" not in exc.detail


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_decoder_raw_bytes(body: bytes) -> None:
    decode_and_parse(body)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(CSR) - 1), st.binary(min_size=1, max_size=8), st.booleans())
def test_fuzz_decoder_mutated_csr(index: int, junk: bytes, wrap: bool) -> None:
    der = bytearray(CSR)
    der[index:index + len(junk)] = junk
    text = base64.b64encode(bytes(der))
    if wrap:
        text = b"\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    decode_and_parse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \r\n\t-", max_size=600))
def test_fuzz_decoder_base64ish_text(text: str) -> None:
    decode_and_parse(text.encode())


@given(st.lists(st.sampled_from([b"\n", b"\r\n", b" ", b"\t"]), max_size=40), st.randoms())
def test_whitespace_anywhere_in_base64_is_accepted(spaces: list[bytes], rnd: object) -> None:
    text = bytearray(base64.b64encode(CSR))
    for ws in spaces:
        pos = rnd.randrange(len(text) + 1)  # type: ignore[attr-defined]
        text[pos:pos] = ws
    assert wire.decode_pkcs10_body(bytes(text)) == CSR


@settings(max_examples=150)
@given(st.one_of(st.none(), st.text(max_size=200), st.binary(max_size=200).map(
    lambda b: "Basic " + base64.b64encode(b).decode())))
def test_fuzz_basic_header(header: str | None) -> None:
    try:
        result = wire.parse_basic(header)
    except PKIError as exc:
        assert exc.kind is ErrorKind.UNAUTHORIZED
        return
    assert result is None or (result[0] and ":" not in result[0])


def test_basic_header_round_trip() -> None:
    header = "Basic " + base64.b64encode(b"dev-1:pa:ss").decode()
    assert wire.parse_basic(header) == ("dev-1", "pa:ss")
    assert wire.parse_basic("Bearer x") is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_proxy_header(value: str) -> None:
    with pytest.raises(PKIError):
        wire.cert_from_proxy_header(value)


def _self_signed(rsa_bits: int = 0) -> x509.Certificate:
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "t")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_proxy_header_url_encoded_pem() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = _self_signed()
    assert wire.cert_from_proxy_header(urllib.parse.quote(cert.public_bytes(Encoding.PEM).decode())) == cert


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_certs_only_is_byte_identical_to_asn1crypto(n: int) -> None:
    certs = [_self_signed(2048 if i % 2 else 0) for i in range(n)]  # mixed sizes: SET OF ordering
    assert wire.certs_only(certs) == wire.certs_only_asn1crypto(certs)


def test_certs_only_round_trip_and_single_line() -> None:
    certs = [_self_signed(), _self_signed()]
    der = wire.certs_only(certs)
    assert set(wire.certs_from_certs_only(der)) == set(certs)  # a DER SET OF: order is canonical
    assert b"\n" not in wire.b64_line(der)


def test_csrattrs_lists_algorithm_key_type_and_san() -> None:
    from asn1crypto import core

    class AnySeq(core.SequenceOf):
        _child_spec = core.Any

    items = [item.dump() for item in AnySeq.load(wire.csr_attributes("secp256r1", True))]
    assert core.ObjectIdentifier(wire.OID_ECDSA_SHA256).dump() in items
    assert core.ObjectIdentifier(wire.OID_SUBJECT_ALT_NAME).dump() in items
    assert any(core.ObjectIdentifier(wire.CURVE_OIDS["secp256r1"]).dump() in i for i in items)
    assert len(AnySeq.load(wire.csr_attributes(None, False))) == 1


def test_multipart_has_both_parts() -> None:
    ctype, body = wire.multipart_mixed([wire.MultipartPart("application/pkcs8", b"QUJD"),
                                        wire.MultipartPart(wire.PKCS7_CERTS_ONLY, b"REVG")])
    boundary = ctype.split("boundary=")[1]
    assert body.count(f"--{boundary}".encode()) == 3 and body.endswith(f"--{boundary}--\r\n".encode())


def test_password_hash_and_cache() -> None:
    encoded = hash_password("s3cret", 1000)
    assert verify_password("s3cret", encoded) and not verify_password("s3cret!", encoded)
    assert not verify_password("x", "garbage") and not verify_password("x", "md5$1$a$b")
    cache = PasswordCache()
    assert cache.check("u", "s3cret", encoded) and cache.check("u", "s3cret", encoded)
    assert not cache.check("u", "wrong", encoded)
