"""Hypothesis fuzzing at the responder: no crash, no state leak, answers only where RFC 7296 allows.

Unauthenticated input may only ever get an IKE_SA_INIT response (§2.21.1); inside an
established SA, garbage that fails the AEAD check gets nothing (§2.21.2) and does not
move the message-ID window.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from gw_initiator import PEER, PyInitiator, Wire
from gw_pki import build_pki
from gw_strategies import headers, payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.constants import MAX_MESSAGE, Exchange, Notify
from gateway.responder import Responder, ResponderConfig
from gateway.revocation import OcspMode

PKI = build_pki()
ALLOWED_INIT_ERRORS = {Notify.INVALID_SYNTAX, Notify.NO_PROPOSAL_CHOSEN, Notify.INVALID_KE_PAYLOAD,
                       Notify.UNSUPPORTED_CRITICAL_PAYLOAD, Notify.COOKIE}
ESTABLISHED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _responder(tmp: Path, **kw: object) -> tuple[Responder, Wire]:
    cfg = ResponderConfig(cert_chain=(PKI.gateway.cert,), key=PKI.gateway.key, roots=(PKI.root.cert,),  # type: ignore[arg-type]
                          ocsp_mode=OcspMode.OFF, listen_host="198.51.100.1", **kw)  # type: ignore[arg-type]
    wire = Wire()
    return Responder(cfg, wire, EventLog(tmp / "ev.jsonl")), wire


def _check_unauthenticated_answers(sent: list[bytes], request: bytes) -> None:
    for raw in sent:
        msg = c.parse_message(raw)
        assert msg.header.is_response and msg.header.exchange == Exchange.IKE_SA_INIT
        assert msg.header.message_id == 0 and msg.header.spi_i == request[:8]
        if len(msg.payloads) == 1:
            note = msg.payloads[0]
            assert isinstance(note, c.Notify) and note.notify_type in ALLOWED_INIT_ERRORS
        else:
            assert any(isinstance(p, c.KE) for p in msg.payloads)


async def _feed(r: Responder, wire: Wire, data: bytes) -> list[bytes]:
    await r.receive(data, PEER, 4500)
    return wire.take()


@FUZZ
@given(st.binary(max_size=1500))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        _check_unauthenticated_answers(await _feed(r, wire, data), data)
    asyncio.run(go())


@FUZZ
@given(headers, st.lists(payloads, max_size=8))
def test_random_payload_chains_as_ike_sa_init(tmp_path: Path, header: c.Header, items: list[c.Payload]) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        hdr = c.Header(header.spi_i, bytes(8), 0, Exchange.IKE_SA_INIT, 0x08, 0)
        raw = c.encode_message(hdr, items)
        _check_unauthenticated_answers(await _feed(r, wire, raw), raw)
    asyncio.run(go())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_ike_sa_init(tmp_path: Path, data: st.DataObject) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path, half_open_timeout=0.05)
        raw = bytearray(PyInitiator(r, wire, PKI.clients["alice"], b"a").init_message())
        for _ in range(data.draw(st.integers(1, 6))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(raw)))
        mutated = bytes(raw[:cut]) + data.draw(st.binary(max_size=40))
        _check_unauthenticated_answers(await _feed(r, wire, mutated), mutated)
        if r.half_open():
            await asyncio.sleep(0.08)
        assert r.half_open() == 0, "half-open state expires"
    asyncio.run(go())


def test_oversized_datagram_is_dropped(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = PyInitiator(r, wire, PKI.clients["alice"], b"a")
        raw = bytearray(ini.init_message() + b"\0" * (MAX_MESSAGE + 10))
        struct.pack_into("!I", raw, 24, len(raw))
        assert await _feed(r, wire, bytes(raw)) == [] and not r.sas
    asyncio.run(go())


@ESTABLISHED
@given(st.binary(min_size=0, max_size=600), st.sampled_from(list(Exchange)), st.integers(0, 3))
def test_garbage_inside_an_established_sa(tmp_path: Path, body: bytes, exchange: int, msg_id: int) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = PyInitiator(r, wire, PKI.clients["alice"], b"alice@example.test")
        await ini.establish()
        (sa,) = r.established()
        before = sa.expected_id
        hdr = c.Header(ini.spi_i, ini.spi_r, 0, exchange, 0x08, msg_id)
        raw = c.encode_message(hdr, [c.Encrypted(first_inner=41, data=body)])
        out = await _feed(r, wire, raw)
        if msg_id == 1:  # the IKE_AUTH message ID: only the cached response may be re-sent
            assert all(o in sa.cached_response[1] for o in out)  # type: ignore[index]
        else:
            assert out == []
        assert sa.expected_id == before and r.established() == [sa]
    asyncio.run(go())


@ESTABLISHED
@given(st.lists(payloads, max_size=6), st.sampled_from([Exchange.INFORMATIONAL, Exchange.CREATE_CHILD_SA]))
def test_authenticated_random_chains(tmp_path: Path, items: list[c.Payload], exchange: int) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = PyInitiator(r, wire, PKI.clients["alice"], b"alice@example.test")
        await ini.establish()
        out = await _feed(r, wire, ini.sk_message(exchange, items))
        assert len(out) == 1, "every authenticated in-window request gets exactly one answer"
        hdr = c.Header.decode(out[0])
        assert hdr.is_response and hdr.message_id == 2
        ini.open(out[0])
    asyncio.run(go())
