"""Responder state machine driven in-process by a codec-built initiator (RFC 7296 §2.1-§2.3)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from gw_initiator import PEER, PyInitiator, Wire, child_payloads, esp_proposal
from gw_pki import build_pki

from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.constants import Exchange, Notify, Protocol
from gateway.policy import Policy
from gateway.responder import Responder, ResponderConfig
from gateway.revocation import OcspMode

PKI = build_pki()
POLICY = """
rules:
  - name: staff
    match: {role: staff}
    local_ts: ["10.1.0.0/16"]
    remote_ts: ["192.168.0.0/24"]
"""


def _responder(tmp_path: Path, **kw: object) -> tuple[Responder, Wire]:
    (tmp_path / "p.yaml").write_text(POLICY)
    cfg = ResponderConfig(cert_chain=(PKI.gateway.cert,), key=PKI.gateway.key, roots=(PKI.root.cert,),  # type: ignore[arg-type]
                          policy=Policy.load(tmp_path / "p.yaml"), ocsp_mode=OcspMode.OFF,
                          listen_host="198.51.100.1", **kw)  # type: ignore[arg-type]
    wire = Wire()
    return Responder(cfg, wire, EventLog(tmp_path / "events.jsonl")), wire


def _initiator(r: Responder, wire: Wire, name: str = "alice") -> PyInitiator:
    return PyInitiator(r, wire, PKI.clients[name], f"{name}@example.test".encode())


def _notify_types(payloads: tuple[c.Payload, ...]) -> list[int]:
    return [p.notify_type for p in payloads if isinstance(p, c.Notify)]


def test_ike_sa_init_retransmission_is_answered_from_cache(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        req = ini.init_message()
        first = await ini.send(req)
        again = await ini.send(req)
        assert first == again and len(r.sas) == 1
        msg = c.parse_message(first[0])
        assert msg.header.is_response and not msg.header.from_initiator
        kinds = {p.notify_type for p in msg.payloads if isinstance(p, c.Notify)}
        assert Notify.CHILDLESS_IKEV2_SUPPORTED in kinds and Notify.SIGNATURE_HASH_ALGORITHMS in kinds
        assert any(isinstance(p, c.CertReq) and len(p.data) == 20 for p in msg.payloads)
    asyncio.run(go())


def test_ike_auth_retransmit_and_message_id_window(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        await ini.ike_sa_init()
        auth = ini.sk_message(Exchange.IKE_AUTH, ini.auth_payloads())
        (resp,) = await ini.send(auth)
        assert await ini.send(auth) == [resp], "duplicate request gets the cached response"
        kinds = [type(p).__name__ for p in ini.open(resp)]
        assert kinds[:3] == ["ID", "Cert", "Auth"] and Notify.MOBIKE_SUPPORTED in _notify_types(ini.open(resp))
        ini.msg_id = 2
        assert await ini.send(ini.sk_message(Exchange.INFORMATIONAL, [], msg_id=5)) == []  # outside window
        assert await ini.send(ini.sk_message(Exchange.INFORMATIONAL, [], msg_id=0)) == []  # old, not cached
        assert await ini.request(Exchange.INFORMATIONAL, []) == ()  # DPD answered, empty
        (sa,) = r.established()
        assert sa.expected_id == 3
    asyncio.run(go())


def test_unknown_critical_payload_in_ike_sa_init(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        (resp,) = await ini.send(ini.init_message(extra=(c.Unknown(raw_type=222, data=b"x", critical=True),)))
        msg = c.parse_message(resp)
        assert msg.payloads == (c.Notify(Notify.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([222])),)
        assert not r.sas
        (resp,) = await ini.send(ini.init_message(extra=(c.Unknown(raw_type=222, data=b"x"),)))
        assert any(isinstance(p, c.KE) for p in c.parse_message(resp).payloads), "non-critical is ignored"
    asyncio.run(go())


def test_unknown_critical_payload_inside_sk(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        await ini.establish()
        got = await ini.request(Exchange.INFORMATIONAL, [c.Unknown(raw_type=199, data=b"", critical=True)])
        assert got == (c.Notify(Notify.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([199])),)
    asyncio.run(go())


def test_invalid_ke_and_legacy_proposals(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        both = c.Proposal(1, Protocol.IKE, b"", (c.Transform(1, 20, 256), c.Transform(2, 5), c.Transform(4, 31),
                                                 c.Transform(4, 19)))
        x25519 = c.parse_message(ini.init_message(group=31))
        raw = c.encode_message(x25519.header, [c.SA(proposals=(both,)), *x25519.payloads[1:]])
        (resp,) = await ini.send(raw)
        assert c.parse_message(resp).payloads == (c.Notify(Notify.INVALID_KE_PAYLOAD, b"\x00\x13"),)
        assert not r.sas, "INVALID_KE keeps no state"
        (resp,) = await ini.send(ini.init_message(group=31))
        assert any(isinstance(p, c.KE) and p.group == 31 for p in c.parse_message(resp).payloads)
        r.sas.clear()
        r.init_index.clear()
        legacy = c.Proposal(1, Protocol.IKE, b"", (c.Transform(1, 12, 256), c.Transform(2, 2), c.Transform(3, 2),
                                                   c.Transform(4, 2)))
        hdr = c.Header(os.urandom(8), bytes(8), 0, Exchange.IKE_SA_INIT, 0x08, 0)
        raw = c.encode_message(hdr, [c.SA(proposals=(legacy,)), c.KE(group=2, data=b"\x01" * 128),
                                     c.Nonce(data=b"n" * 32)])
        (resp,) = await ini.send(raw)
        assert c.parse_message(resp).payloads == (c.Notify(Notify.NO_PROPOSAL_CHOSEN),)
        assert not r.sas
    asyncio.run(go())


def test_half_open_sas_expire_and_cookies_kick_in(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path, half_open_timeout=0.2, cookie_threshold=2)
        for _ in range(2):
            await _initiator(r, wire).send(_initiator(r, wire).init_message())
        assert r.half_open() == 2
        ini = _initiator(r, wire)
        req = ini.init_message()
        (resp,) = await ini.send(req)
        cookie = c.parse_message(resp).payloads[0]
        assert isinstance(cookie, c.Notify) and cookie.notify_type == Notify.COOKIE and len(r.sas) == 2
        again = c.encode_message(c.parse_message(req).header, [cookie, *c.parse_message(req).payloads])
        (resp,) = await ini.send(again)
        assert any(isinstance(p, c.KE) for p in c.parse_message(resp).payloads)
        await asyncio.sleep(0.3)
        assert r.half_open() == 0 and not r.sas
    asyncio.run(go())


def test_child_sa_narrowed_rekeyed_and_deleted(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        resp = await ini.establish(child=True)
        sa_p = next(p for p in resp if isinstance(p, c.SA))
        tsi = next(p for p in resp if isinstance(p, c.TS) and p.initiator)
        assert tsi.selectors[0].start_addr == bytes([192, 168, 0, 0])
        (ike,) = r.established()
        (child,) = ike.children.values()
        assert child.spi_in == sa_p.proposals[0].spi
        new_spi = os.urandom(4)
        rekey = [c.Notify(Notify.REKEY_SA, protocol=Protocol.ESP, spi=child.spi_out),
                 c.SA(proposals=(esp_proposal(new_spi),)), c.Nonce(data=os.urandom(32)),
                 *child_payloads(new_spi)[1:]]
        got = await ini.request(Exchange.CREATE_CHILD_SA, rekey)
        assert [type(p).__name__ for p in got] == ["SA", "Nonce", "TS", "TS"]
        assert len(ike.children) == 2
        got = await ini.request(Exchange.INFORMATIONAL, [c.Delete(protocol=Protocol.ESP, spi_size=4,
                                                                  spis=(child.spi_out,))])
        assert got == (c.Delete(protocol=Protocol.ESP, spi_size=4, spis=(child.spi_in,)),)
        assert len(ike.children) == 1
        unknown = await ini.request(Exchange.CREATE_CHILD_SA, [
            c.Notify(Notify.REKEY_SA, protocol=Protocol.ESP, spi=b"zzzz"), *child_payloads(os.urandom(4))[:1],
            c.Nonce(data=os.urandom(32)), *child_payloads(b"1234")[1:]])
        assert _notify_types(unknown) == [Notify.CHILD_SA_NOT_FOUND]
    asyncio.run(go())


def test_ike_rekey_moves_children_and_old_sa_goes_away(tmp_path: Path) -> None:
    async def go() -> None:
        from gw_initiator import ike_proposal

        from gateway.ikev2.crypto import DhPrivate

        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        await ini.establish(child=True)
        dh = DhPrivate.generate(19)
        new_spi = os.urandom(8)
        got = await ini.request(Exchange.CREATE_CHILD_SA, [
            c.SA(proposals=(ike_proposal(19, new_spi),)), c.Nonce(data=os.urandom(32)),
            c.KE(group=19, data=dh.public())])
        sa_p = next(p for p in got if isinstance(p, c.SA))
        assert len(sa_p.proposals[0].spi) == 8
        new = r.sas[sa_p.proposals[0].spi]
        assert new.spi_i == new_spi and new.state.value == "established" and len(new.children) == 1
        assert await ini.request(Exchange.INFORMATIONAL, [c.Delete(protocol=Protocol.IKE)]) == ()
        assert list(r.sas.values()) == [new]
    asyncio.run(go())


def test_mobike_update_sa_addresses_moves_the_peer(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        await ini.establish()
        moved = ("203.0.113.9", 61000)
        raw = ini.sk_message(Exchange.INFORMATIONAL, [c.Notify(Notify.UPDATE_SA_ADDRESSES)])
        await r.receive(raw, moved, 4500)
        ((_, to, _),) = wire.sent
        assert to == moved and r.established()[0].peer == moved
    asyncio.run(go())


def test_auth_failures_answer_authentication_failed(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        for name, ident in [("mallory", b"mallory@example.test"), ("alice", b"bob@example.test"),
                            ("bob", b"bob@example.test")]:  # bob: no policy rule matches
            ini = PyInitiator(r, wire, PKI.clients[name], ident)
            got = await ini.establish()
            assert got == (c.Notify(Notify.AUTHENTICATION_FAILED),), name
        assert not r.established()
    asyncio.run(go())


def test_revoke_sends_delete_and_blocks(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        await ini.establish()
        (sa,) = r.established()
        assert r.revoke(sa.auth.issuer_key_id, sa.auth.serial) == 1  # type: ignore[union-attr]
        await asyncio.sleep(0)
        (req,) = wire.take()
        hdr = c.Header.decode(req)
        assert not hdr.is_response and not hdr.from_initiator and hdr.exchange == Exchange.INFORMATIONAL
        assert ini.open(req) == (c.Delete(protocol=Protocol.IKE),)
        ack = ini.sk_message(Exchange.INFORMATIONAL, [], msg_id=hdr.message_id, response=True)
        await r.receive(ack, PEER, 4500)
        await asyncio.sleep(0.01)
        assert not r.sas
        again = await _initiator(r, wire).establish()
        assert again == (c.Notify(Notify.AUTHENTICATION_FAILED),)
    asyncio.run(go())


@pytest.mark.parametrize("flags", [0x20, 0x28, 0x00])
def test_no_answer_to_responses_or_non_initiator_ike_sa_init(tmp_path: Path, flags: int) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        msg = c.parse_message(ini.init_message())
        raw = c.encode_message(c.Header(msg.header.spi_i, bytes(8), 0, Exchange.IKE_SA_INIT, flags, 0),
                               list(msg.payloads))
        assert await ini.send(raw) == [] and not r.sas
    asyncio.run(go())


def test_ike_rekey_rechecks_revocation(tmp_path: Path) -> None:
    async def go() -> None:
        from gw_initiator import ike_proposal

        from gateway.ikev2.crypto import DhPrivate

        r, wire = _responder(tmp_path)
        ini = _initiator(r, wire)
        await ini.establish()
        (sa,) = r.established()
        assert sa.auth is not None
        r.blocklist.add(sa.auth.issuer_key_id, sa.auth.serial)  # block without the push-time delete
        got = await ini.request(Exchange.CREATE_CHILD_SA, [
            c.SA(proposals=(ike_proposal(19, os.urandom(8)),)), c.Nonce(data=os.urandom(32)),
            c.KE(group=19, data=DhPrivate.generate(19).public())])
        assert _notify_types(got) == [Notify.NO_PROPOSAL_CHOSEN]
        await asyncio.sleep(0)
        (delete,) = wire.take()
        assert ini.open(delete) == (c.Delete(protocol=Protocol.IKE),)
        assert not r.established()
    asyncio.run(go())


def test_initial_contact_drops_older_sas_of_the_same_identity(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path)
        first = _initiator(r, wire)
        await first.establish()
        second = _initiator(r, wire)
        await second.ike_sa_init()
        await second.request(Exchange.IKE_AUTH, [*second.auth_payloads(), c.Notify(Notify.INITIAL_CONTACT)])
        (only,) = r.established()
        assert only.spi_i == second.spi_i
        other = _initiator(r, wire, "carol")
        await other.ike_sa_init()
        await other.request(Exchange.IKE_AUTH, [*other.auth_payloads(), c.Notify(Notify.INITIAL_CONTACT)])
        assert len(r.established()) == 2, "other identities are untouched"
    asyncio.run(go())


def test_rfc7383_fragmented_ike_auth_both_ways(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire = _responder(tmp_path, fragment_size=400)
        ini = _initiator(r, wire)
        await ini.ike_sa_init()
        assert Notify.IKEV2_FRAGMENTATION_SUPPORTED in _notify_types(c.parse_message(ini.init_response).payloads)
        frags = ini.sk_fragments(Exchange.IKE_AUTH, ini.auth_payloads(), 300)
        assert len(frags) >= 3
        for f in reversed(frags[1:]):  # out of order, and a duplicate
            assert await ini.send(f) == []
        assert await ini.send(frags[2]) == []
        out = await ini.send(frags[0])
        assert len(out) >= 2 and all(len(d) <= 400 for d in out)
        got = ini.open_fragments(out)
        assert [type(p).__name__ for p in got][:3] == ["ID", "Cert", "Auth"]
        assert r.established()
        assert await ini.send(frags[1]) == [], "retransmit only on fragment #1 (RFC 7383 §2.6.1)"
        assert await ini.send(frags[0]) == out
    asyncio.run(go())


class _LaterClock:
    """The real clock moved forward by ``offset`` (the certificate ages while the SA is up)."""

    def __init__(self) -> None:
        from datetime import timedelta

        self.offset = timedelta(0)

    def now(self):  # type: ignore[no-untyped-def]
        from datetime import UTC, datetime

        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        import time

        return time.monotonic()


@pytest.mark.parametrize("why", ["held", "expired"])
def test_child_sa_exchange_rechecks_the_peer(tmp_path: Path, why: str) -> None:
    """Issue 17: a CHILD_SA (re)key re-checks the certificate: held (a posture downgrade) or expired (its
    TPM evidence expired) → NO_PROPOSAL_CHOSEN, then the IKE SA is deleted."""
    async def go() -> None:
        from datetime import timedelta

        (tmp_path / "p.yaml").write_text(POLICY)
        clock = _LaterClock()
        cfg = ResponderConfig(cert_chain=(PKI.gateway.cert,), key=PKI.gateway.key, roots=(PKI.root.cert,),  # type: ignore[arg-type]
                              policy=Policy.load(tmp_path / "p.yaml"), ocsp_mode=OcspMode.OFF,
                              listen_host="198.51.100.1")
        wire = Wire()
        r = Responder(cfg, wire, EventLog(tmp_path / "events.jsonl"), clock=clock)
        ini = _initiator(r, wire)
        await ini.establish(child=True)
        (sa,) = r.established()
        (child,) = sa.children.values()
        assert sa.auth is not None and sa.auth.cert is not None
        if why == "held":
            r.blocklist.add(sa.auth.issuer_key_id, sa.auth.serial)  # as a pushed hold would, minus the delete
        else:
            clock.offset = sa.auth.cert.not_valid_after_utc - clock.now() + timedelta(seconds=1)
        new_spi = os.urandom(4)
        got = await ini.request(Exchange.CREATE_CHILD_SA, [
            c.Notify(Notify.REKEY_SA, protocol=Protocol.ESP, spi=child.spi_out),
            c.SA(proposals=(esp_proposal(new_spi),)), c.Nonce(data=os.urandom(32)), *child_payloads(new_spi)[1:]])
        assert _notify_types(got) == [Notify.NO_PROPOSAL_CHOSEN]
        await asyncio.sleep(0)
        (delete,) = wire.take()
        assert ini.open(delete) == (c.Delete(protocol=Protocol.IKE),)
        assert not r.established()
    asyncio.run(go())
