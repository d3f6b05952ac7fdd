"""The shared DER reader/writers (ca.der) and the bounded body reader (ca.service.bodies):
round trips against asn1crypto, hypothesis fuzzing of the reader, bounds of the body reader."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.der import DerError, certs_only, der_integer, der_integer_value, der_set_of, read_all, read_tlv, tlv_start
from ca.service.bodies import BodyTooLarge, ClientDisconnected, InvalidContentLength, read_body


def _cert(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))


def _is_der_sorted(components: list[bytes]) -> bool:
    width = max((len(c) for c in components), default=0)
    padded = [c.ljust(width, b"\0") for c in components]
    return padded == sorted(padded)


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8))
def test_set_of_is_sorted_as_x690_requires(components: list[bytes]) -> None:
    encoded = der_set_of(components)
    assert encoded[0] == 0x31
    _tag, s, e = read_tlv(encoded, 0, len(encoded))
    assert e == len(encoded) and encoded[s:e] == b"".join(sorted(components, key=lambda c: c.ljust(40, b"\0")))


def test_certs_only_parses_with_asn1crypto_and_is_der_sorted() -> None:
    certs = [_cert(f"c{i}" * (i + 1)) for i in range(4)]
    crls = [b"\x30\x03\x02\x01\x05", b"\x30\x03\x02\x01\x01"]  # opaque SEQUENCEs stand in for CRLs
    der = certs_only(certs, crls)
    signed = asn1_cms.ContentInfo.load(der)["content"]
    assert signed["version"].native == "v1" and len(signed["signer_infos"]) == 0
    got = [c.chosen.dump() for c in signed["certificates"]]
    assert sorted(got) == sorted(certs) and _is_der_sorted(got)
    got_crls = [c.dump() for c in signed["crls"]]
    assert got_crls == [crls[1], crls[0]]
    assert certs_only([]) == asn1_cms.ContentInfo({"content_type": "signed_data", "content": asn1_cms.SignedData({
        "version": "v1", "digest_algorithms": [], "encap_content_info": {"content_type": "data"},
        "certificates": [], "signer_infos": []})}).dump()


def test_scep_degenerate_pkcs7_is_der_sorted() -> None:
    """RFC 8894 §3.4 degenerate certs-only PKCS#7 is a DER SET OF: sorted, whatever order it was given."""
    from enrollment.scep import cms

    certs = [x509.load_der_x509_certificate(_cert("x" * n)) for n in (30, 1, 12)]
    for order in (certs, certs[::-1]):
        der = cms.degenerate(order)
        got = [c.chosen.dump() for c in asn1_cms.ContentInfo.load(der)["content"]["certificates"]]
        assert _is_der_sorted(got) and len(got) == 3
        assert der == cms.degenerate(certs)  # canonical: independent of the input order
    from enrollment.est import wire

    assert cms.degenerate(certs) == wire.certs_only(certs)  # one encoder for EST and SCEP


@given(st.integers(min_value=-(1 << 200), max_value=1 << 200))
def test_integer_round_trip(value: int) -> None:
    encoded = der_integer(value)
    tag, s, e = read_tlv(encoded, 0, len(encoded))
    assert tag == 0x02 and der_integer_value(encoded, s, e) == value and tlv_start(s, e) == 0
    assert asn1_core.Integer.load(encoded).native == value


@settings(max_examples=400)
@given(st.binary(max_size=64))
def test_reader_only_raises_der_errors_and_stays_in_bounds(data: bytes) -> None:
    try:
        items = read_all(data, 0, len(data), 8)
    except DerError:
        return
    pos = 0
    for _tag, s, e in items:
        assert tlv_start(s, e) == pos and s <= e <= len(data)
        pos = e
    assert pos == len(data)


@pytest.mark.parametrize("bad", [b"\x30\x80\x00\x00", b"\x30\x81\x05abcde", b"\x30\x05abc", b"\x1f\x01\x00",
                                 b"\x30\x85\x01\x00\x00\x00\x00"])
def test_reader_refuses_non_der(bad: bytes) -> None:
    with pytest.raises(DerError):
        read_all(bad, 0, len(bad), 4)


def _receiver(chunks: list[bytes], disconnect: bool = False) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def test_body_reader_bounds() -> None:
    run = asyncio.run
    assert run(read_body(_receiver([b"ab", b"cd"]), 4, b"4")) == b"abcd"
    assert run(read_body(_receiver([b""]), 4)) == b""
    with pytest.raises(BodyTooLarge):
        run(read_body(_receiver([b"ab"]), 4, "5"))  # declared too large: nothing read
    with pytest.raises(BodyTooLarge):
        run(read_body(_receiver([b"abc", b"de"]), 4))  # chunked past the bound
    with pytest.raises(InvalidContentLength):
        run(read_body(_receiver([b"ab"]), 4, b"-1"))
    with pytest.raises(ClientDisconnected):
        run(read_body(_receiver([b"ab"], disconnect=True), 4))


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=6), st.integers(min_value=0, max_value=80))
def test_body_reader_returns_everything_within_the_bound(chunks: list[bytes], limit: int) -> None:
    total = b"".join(chunks)
    try:
        got = asyncio.run(read_body(_receiver(chunks), limit))
    except BodyTooLarge:
        assert len(total) > limit
    else:
        assert got == total and len(total) <= limit
