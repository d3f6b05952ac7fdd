"""RADIUS codec (gateway.radius.packet): authenticators, Message-Authenticator, MPPE keys, EAP
splitting; hypothesis fuzzing of every parser."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.radius import packet as rp
from gateway.radius.client import SecretError, Server, resolve_secret
from gateway.radius.packet import Attr, Code
from gateway.responder.eap import EapError, parse_eap

SECRET = b"unit-secret"


def _answer(code: int, req: bytes, attrs: list[tuple[int, bytes]], secret: bytes = SECRET, ma: bool = True) -> bytes:
    if ma:
        return rp.encode_response(code, req[1], attrs, secret, req[4:20])
    body = rp.encode_attributes(attrs)
    raw = bytes((code, req[1])) + (20 + len(body)).to_bytes(2, "big") + req[4:20] + body
    auth = hashlib.md5(raw + secret, usedforsecurity=False).digest()
    return raw[:4] + auth + raw[20:]


def test_message_authenticator_is_first_and_verifies() -> None:
    req = rp.encode_request(Code.ACCESS_REQUEST, 7, [(Attr.USER_NAME, b"alice")], SECRET, os.urandom(16))
    pkt = rp.decode(req)
    assert pkt.attributes[0][0] == Attr.MESSAGE_AUTHENTICATOR
    zeroed = req[:22] + bytes(16) + req[38:]
    assert hmac.compare_digest(pkt.attributes[0][1], hmac.new(SECRET, zeroed, "md5").digest())


def test_response_checks() -> None:
    req = rp.encode_request(Code.ACCESS_REQUEST, 9, [(Attr.USER_NAME, b"a")], SECRET, os.urandom(16))
    good = _answer(Code.ACCESS_ACCEPT, req, [(Attr.FILTER_ID, b"staff")])
    assert rp.verify_response(good, SECRET, req[4:20], require_ma=True).first(Attr.FILTER_ID) == b"staff"
    with pytest.raises(rp.MalformedPacket, match="wrong secret"):
        rp.verify_response(good, b"other", req[4:20], require_ma=True)
    no_ma = _answer(Code.ACCESS_ACCEPT, req, [(Attr.FILTER_ID, b"staff")], ma=False)
    with pytest.raises(rp.MalformedPacket, match="Message-Authenticator missing"):
        rp.verify_response(no_ma, SECRET, req[4:20], require_ma=True)
    assert rp.verify_response(no_ma, SECRET, req[4:20], require_ma=False).code == Code.ACCESS_ACCEPT
    tampered = bytearray(good)
    tampered[-1] ^= 1
    with pytest.raises(rp.MalformedPacket):
        rp.verify_response(bytes(tampered), SECRET, req[4:20], require_ma=True)


def test_accounting_and_disconnect_authenticators() -> None:
    for code in (Code.ACCOUNTING_REQUEST, Code.DISCONNECT_REQUEST):
        raw = rp.encode_request(code, 3, [(Attr.USER_NAME, b"bob")], SECRET, b"ignored" * 2 + b"xx")
        assert rp.verify_request(raw, SECRET, require_ma=True).first(Attr.USER_NAME) == b"bob"
        with pytest.raises(rp.MalformedPacket):
            rp.verify_request(raw, b"wrong", require_ma=True)


@given(st.binary(min_size=1, max_size=64), st.binary(min_size=16, max_size=16), st.binary(min_size=1, max_size=40))
def test_mppe_round_trip(key: bytes, request_auth: bytes, secret: bytes) -> None:
    salt = bytes([0x80 | 0x15, 0x42])
    assert rp.decrypt_mppe(rp.encrypt_mppe(key, secret, request_auth, salt), secret, request_auth) == key


def test_msk_is_recv_then_send() -> None:
    ra = os.urandom(16)
    recv, send = os.urandom(32), os.urandom(32)
    pkt = rp.Packet(Code.ACCESS_ACCEPT, 1, bytes(16), (
        rp.vsa(rp.MICROSOFT, rp.MS_MPPE_SEND_KEY, rp.encrypt_mppe(send, SECRET, ra, b"\x81\x01")),
        rp.vsa(rp.MICROSOFT, rp.MS_MPPE_RECV_KEY, rp.encrypt_mppe(recv, SECRET, ra, b"\x82\x02"))))
    assert rp.msk_of(pkt, SECRET, ra) == recv + send


def test_eap_split_at_253() -> None:
    eap = os.urandom(1000)
    parts = rp.split_eap(eap)
    assert [len(v) for _, v in parts] == [253, 253, 253, 241]
    pkt = rp.decode(rp.encode_request(Code.ACCESS_REQUEST, 1, parts, SECRET, os.urandom(16)))
    assert pkt.eap_message() == eap


def test_secret_references(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "s").write_text("from-file\n")
    assert resolve_secret(f"file:{tmp_path / 's'}") == b"from-file"
    monkeypatch.setenv("EAP_TEST_SECRET", "from-env")
    assert resolve_secret("env:EAP_TEST_SECRET") == b"from-env"
    for bad in ("plain-secret", "env:EAP_TEST_UNSET_X", f"file:{tmp_path / 'missing'}"):
        with pytest.raises(SecretError):
            resolve_secret(bad)
    assert "from-file" not in repr(Server("h", 1, b"from-file"))


@settings(max_examples=400)
@given(st.binary(max_size=4200))
def test_fuzz_decode(data: bytes) -> None:
    try:
        pkt = rp.decode(data)
    except rp.MalformedPacket:
        return
    assert sum(len(v) + 2 for _, v in pkt.attributes) == int.from_bytes(data[2:4], "big") - 20
    pkt.vendor(rp.MICROSOFT, rp.MS_MPPE_RECV_KEY)
    pkt.eap_message()


@settings(max_examples=300)
@given(st.binary(max_size=600), st.binary(min_size=16, max_size=16))
def test_fuzz_verify_and_mppe(data: bytes, ra: bytes) -> None:
    for fn in (lambda: rp.verify_response(data, SECRET, ra, True), lambda: rp.verify_request(data, SECRET, True),
               lambda: rp.decrypt_mppe(data[:300], SECRET, ra)):
        with contextlib.suppress(rp.MalformedPacket):
            fn()


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=253)), max_size=12))
def test_fuzz_attribute_round_trip(attrs: list[tuple[int, bytes]]) -> None:
    raw = rp.encode_request(Code.ACCESS_REQUEST, 5, attrs, SECRET, os.urandom(16))
    assert list(rp.decode(raw).attributes[1:]) == attrs


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_parse_eap(data: bytes) -> None:
    try:
        code, _, etype, _tdata = parse_eap(data)
    except EapError:
        return
    assert code in (1, 2, 3, 4) and (etype == 0) == (code in (3, 4))


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def _dae(calls: list[tuple[str | None, str | None, str | None]]):  # type: ignore[no-untyped-def]
    from gateway.radius.config import DaeConfig
    from gateway.radius.dae import DaeListener

    def disconnect(user: str | None, sid: str | None, ip: str | None) -> int:
        calls.append((user, sid, ip))
        return 1 if user == "alice" else 0

    listener = DaeListener(DaeConfig("127.0.0.1", 0, SECRET, frozenset({"127.0.0.1"})), disconnect,
                           lambda *a, **k: None, DAE_CLOCK)
    transport = _Transport()
    listener.connection_made(transport)  # type: ignore[arg-type]
    return listener, transport


class _Clock:
    def now(self) -> datetime:
        return datetime(2026, 12, 6, 21, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0


DAE_CLOCK = _Clock()
NOW_TS = (Attr.EVENT_TIMESTAMP, rp.u32(int(DAE_CLOCK.now().timestamp())))


def test_dae_answers() -> None:
    calls: list[tuple[str | None, str | None, str | None]] = []
    listener, transport = _dae(calls)
    peer = ("127.0.0.1", 5000)
    req = rp.encode_request(Code.DISCONNECT_REQUEST, 1, [(Attr.USER_NAME, b"alice"), NOW_TS], SECRET, bytes(16))
    listener.datagram_received(req, peer)
    listener.datagram_received(req, peer)  # duplicate: same answer, no second disconnect
    assert calls == [("alice", None, None)] and len(transport.sent) == 2
    ack = rp.verify_response(transport.sent[0][0], SECRET, req[4:20], require_ma=True)
    assert ack.code == Code.DISCONNECT_ACK and transport.sent[0][0] == transport.sent[1][0]
    nak_req = rp.encode_request(Code.DISCONNECT_REQUEST, 2, [(Attr.USER_NAME, b"bob"), NOW_TS], SECRET, bytes(16))
    listener.datagram_received(nak_req, peer)
    nak = rp.verify_response(transport.sent[-1][0], SECRET, nak_req[4:20], require_ma=True)
    assert nak.code == Code.DISCONNECT_NAK and nak.first(Attr.ERROR_CAUSE) == rp.u32(503)
    # wrong secret, foreign source, no Message-Authenticator: silence
    before = len(transport.sent)
    listener.datagram_received(rp.encode_request(Code.DISCONNECT_REQUEST, 3, [(Attr.USER_NAME, b"alice")],
                                                 b"wrong", bytes(16)), peer)
    listener.datagram_received(req, ("192.0.2.1", 5000))
    body = rp.encode_attributes([(Attr.USER_NAME, b"alice")])
    raw = bytes((40, 4)) + (20 + len(body)).to_bytes(2, "big") + bytes(16) + body
    raw = raw[:4] + hashlib.md5(raw + SECRET, usedforsecurity=False).digest() + raw[20:]
    listener.datagram_received(raw, peer)
    assert len(transport.sent) == before and len(calls) == 2


def test_dae_discards_stale_or_missing_event_timestamp() -> None:
    """RFC 5176 §6.3: outside the window (by the injected clock) or absent (require_event_timestamp,
    the default): silently discarded, no NAK, nothing disconnected."""
    calls: list[tuple[str | None, str | None, str | None]] = []
    listener, transport = _dae(calls)
    now = int(DAE_CLOCK.now().timestamp())
    for i, extra in enumerate([[(Attr.EVENT_TIMESTAMP, rp.u32(now - 301))],
                               [(Attr.EVENT_TIMESTAMP, rp.u32(now + 301))], []]):
        listener.datagram_received(rp.encode_request(Code.DISCONNECT_REQUEST, i, [(Attr.USER_NAME, b"alice"),
                                                                                  *extra], SECRET, bytes(16)),
                                   ("127.0.0.1", 5000))
    assert transport.sent == [] and calls == []
    listener.datagram_received(rp.encode_request(Code.DISCONNECT_REQUEST, 9, [
        (Attr.USER_NAME, b"alice"), (Attr.EVENT_TIMESTAMP, rp.u32(now - 299))], SECRET, bytes(16)), ("127.0.0.1", 5000))
    assert calls == [("alice", None, None)] and len(transport.sent) == 1


def test_dae_configuration_needs_clients(tmp_path: Path) -> None:
    from gateway.radius.config import RadiusConfigError, load

    (tmp_path / "dae.secret").write_text("s3cret")
    ref = f"file:{tmp_path / 'dae.secret'}"
    base = f'servers:\n  - {{host: 127.0.0.1, secret: "{ref}"}}\ndae:\n  secret: "{ref}"\n'
    for extra in ("", "  clients: []\n"):
        (tmp_path / "r.yaml").write_text(base + extra)
        with pytest.raises(RadiusConfigError, match="clients"):
            load(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text(base + "  clients: [127.0.0.1]\n  require_event_timestamp: false\n")
    dae = load(tmp_path / "r.yaml")[1]
    assert dae is not None and dae.clients == {"127.0.0.1"} and not dae.require_event_timestamp


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_fuzz_dae_listener(data: bytes) -> None:
    calls: list[tuple[str | None, str | None, str | None]] = []
    listener, transport = _dae(calls)
    listener.datagram_received(data, ("127.0.0.1", 1))
    assert not transport.sent and not calls  # random bytes never authenticate


def test_retransmits_the_same_packet_then_fails_over() -> None:
    """RFC 5080 §2.2.1: a retransmission is the identical datagram (same Identifier and
    authenticator); after the retries the next server gets a fresh packet. The "servers" here are
    plain sockets that only record what arrives."""
    import asyncio
    import socket

    from gateway.radius.client import NoAnswer, RadiusClient

    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in sinks:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    servers = [Server("127.0.0.1", s.getsockname()[1], SECRET, f"s{i}") for i, s in enumerate(sinks)]

    async def go() -> str:
        try:
            await RadiusClient(servers, timeout=0.05, retries=2).transact(Code.ACCESS_REQUEST,
                                                                          [(Attr.USER_NAME, b"x")])
        except NoAnswer as exc:
            return str(exc)
        return ""

    err = asyncio.run(go())
    got = []
    for s in sinks:
        seen = []
        while True:
            try:
                seen.append(s.recv(4096))
            except BlockingIOError:
                break
        s.close()
        got.append(seen)
    assert "s0" in err and "s1" in err
    assert [len(g) for g in got] == [3, 3] and len(set(got[0])) == 1 and len(set(got[1])) == 1
    assert got[0][0] != got[1][0]
    assert rp.decode(got[0][0]).attributes[0][0] == Attr.MESSAGE_AUTHENTICATOR
