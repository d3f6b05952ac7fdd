"""Codec round-trips (hypothesis) and strict-bounds checks (RFC 7296 §3)."""

from __future__ import annotations

import struct

import pytest
from gw_strategies import headers, payloads
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ikev2 import codec as c
from gateway.ikev2.constants import MAX_MESSAGE, PayloadType


@settings(max_examples=300, deadline=None)
@given(headers, st.lists(payloads, max_size=8))
def test_message_round_trip(header: c.Header, items: list[c.Payload]) -> None:
    raw = c.encode_message(header, items)
    msg = c.parse_message(raw)
    assert msg.payloads == tuple(items)
    assert (msg.header.spi_i, msg.header.message_id, msg.header.length) == (header.spi_i, header.message_id, len(raw))
    assert c.encode_message(msg.header, list(msg.payloads)) == raw


@settings(max_examples=200, deadline=None)
@given(headers, st.lists(payloads, min_size=1, max_size=5), st.data())
def test_truncation_is_always_malformed(header: c.Header, items: list[c.Payload], data: st.DataObject) -> None:
    raw = c.encode_message(header, items)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(c.MalformedMessage):
        c.parse_message(raw[:cut])


def test_oversized_message_is_refused() -> None:
    hdr = c.Header(b"a" * 8, b"\0" * 8, 0, 34, 8, 0)
    raw = c.encode_message(hdr, [c.Vendor(data=b"x" * 60000), c.Vendor(data=b"y" * 6000)])
    assert len(raw) > MAX_MESSAGE
    with pytest.raises(c.MalformedMessage, match="too large"):
        c.parse_message(raw)


def test_length_field_must_match_datagram() -> None:
    raw = c.encode_message(c.Header(b"a" * 8, b"\0" * 8, 0, 34, 8, 0), [c.Nonce(data=b"n" * 16)])
    with pytest.raises(c.MalformedMessage):
        c.parse_message(raw + b"\0")


def test_payload_length_below_header_is_malformed() -> None:
    raw = bytearray(c.encode_message(c.Header(b"a" * 8, b"\0" * 8, 0, 34, 8, 0), [c.Nonce(data=b"n" * 16)]))
    struct.pack_into("!H", raw, 30, 3)
    with pytest.raises(c.MalformedMessage):
        c.parse_message(bytes(raw))


def test_unknown_critical_payload_raises_with_its_type() -> None:
    raw = c.encode_message(c.Header(b"a" * 8, b"\0" * 8, 0, 34, 8, 0),
                           [c.Nonce(data=b"n" * 16), c.Unknown(raw_type=200, data=b"zz", critical=True)])
    with pytest.raises(c.UnsupportedCritical) as info:
        c.parse_message(raw)
    assert info.value.payload_type == 200


def test_known_payload_with_critical_bit_is_accepted() -> None:
    raw = bytearray(c.encode_message(c.Header(b"a" * 8, b"\0" * 8, 0, 34, 8, 0), [c.Nonce(data=b"n" * 16)]))
    raw[29] |= 0x80
    assert isinstance(c.parse_message(bytes(raw)).payloads[0], c.Nonce)


def test_sk_must_be_last() -> None:
    chain = c.encode_chain([c.Encrypted(first_inner=41, data=b"x" * 30)])
    chain = bytes([chain[0]]) + chain[1:] + c.encode_chain([c.Nonce(data=b"n" * 16)])
    with pytest.raises(c.MalformedMessage, match="last"):
        c.parse_chain(PayloadType.SK, chain)


@pytest.mark.parametrize("body", [
    b"\x00\x00\x00\x08\x01\x01\x00\x01" + b"\x03\x00\x00\x08\x01\x00\x00\x14",  # last flag 3 on only transform
    b"\x02\x00\x00\x08\x01\x01\x00\x00",  # claims more proposals, none follow
    b"\x00\x00\x00\x20\x01\x01\x00\x00",  # proposal length beyond payload
])
def test_bad_sa_substructures(body: bytes) -> None:
    with pytest.raises(c.MalformedMessage):
        c.decode_payload(PayloadType.SA, body, False, 0)
