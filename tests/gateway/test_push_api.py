"""Revocation push receiver semantics (gateway/push.py), in-process."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from gw_initiator import PyInitiator, Wire
from gw_pki import build_pki

from ca.revocation_event import RevocationEvent, now_rfc3339, sign_event
from gateway.certs import key_id
from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.constants import Notify
from gateway.push import ControlApi, serve_tcp
from gateway.responder import Responder, ResponderConfig
from gateway.revocation import OcspMode

PKI = build_pki()


def _event(serial: int, kind: str = "revoked") -> bytes:
    ev = RevocationEvent(event_id=str(uuid.uuid4()), type=kind, issuer="CN=x", issuer_key_id=key_id(PKI.root.cert),
                         serial=format(serial, "x"), reason="keyCompromise", revoked_at=now_rfc3339(),
                         created_at=now_rfc3339())
    key = PKI.push_signer.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return sign_event(ev, key, [PKI.push_signer.cert]).encode()


def _setup(tmp_path: Path) -> tuple[Responder, Wire, ControlApi]:
    cfg = ResponderConfig(cert_chain=(PKI.gateway.cert,), key=PKI.gateway.key, roots=(PKI.root.cert,),  # type: ignore[arg-type]
                          ocsp_mode=OcspMode.OFF, listen_host="198.51.100.1")
    wire = Wire()
    r = Responder(cfg, wire, EventLog(tmp_path / "ev.jsonl"))
    return r, wire, ControlApi(r)


def test_revoke_duplicate_and_unrevoke(tmp_path: Path) -> None:
    async def go() -> None:
        r, wire, api = _setup(tmp_path)
        alice = PKI.clients["alice"]
        await PyInitiator(r, wire, alice, b"alice@example.test").establish()
        res = api.handle("POST", "/v1/revocations", _event(alice.cert.serial_number))
        assert (res.status, res.body) == (200, {"accepted": True, "terminated_sas": 1, "duplicate": False})
        again = api.handle("POST", "/v1/revocations", _event(alice.cert.serial_number))
        assert again.body == {"accepted": True, "terminated_sas": 0, "duplicate": True}
        refused = await PyInitiator(r, wire, alice, b"alice@example.test").establish()
        assert refused == (c.Notify(Notify.AUTHENTICATION_FAILED),)
        released = api.handle("POST", "/v1/revocations", _event(alice.cert.serial_number, "unrevoked"))
        assert released.status == 200 and not r.blocklist.entries
        wire.take()
        assert await PyInitiator(r, wire, alice, b"alice@example.test").establish() != refused
        lines = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
        assert [x["type"] for x in lines if x["event"] == "revocation_event"] == ["revoked", "revoked", "unrevoked"]
    asyncio.run(go())


def test_signed_test_event_is_acknowledged_and_changes_nothing(tmp_path: Path) -> None:
    """``ikepki gateways add/test`` probe: even carrying a live SA's serial, a ``test`` event
    blocks nothing and deletes no SA; an untrusted one is refused like any event (401)."""
    async def go() -> None:
        r, wire, api = _setup(tmp_path)
        alice = PKI.clients["alice"]
        await PyInitiator(r, wire, alice, b"alice@example.test").establish()
        live = len(r.established())
        res = api.handle("POST", "/v1/revocations", _event(alice.cert.serial_number, "test"))
        assert (res.status, res.body) == (200, {"accepted": True, "test": True, "terminated_sas": 0,
                                                "duplicate": False})
        assert not r.blocklist.entries and len(r.established()) == live == 1
        forged = build_pki()  # a push signer under another root
        ev = RevocationEvent(event_id="t", type="test", issuer="CN=x", issuer_key_id="00", serial="0", reason=None,
                             revoked_at=None, created_at=now_rfc3339())
        key = forged.push_signer.key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        untrusted = api.handle("POST", "/v1/revocations", sign_event(ev, key, [forged.push_signer.cert]).encode())
        assert untrusted.status == 401 and untrusted.body["accepted"] is False
    asyncio.run(go())


def test_routes_and_http_framing(tmp_path: Path) -> None:
    async def go() -> None:
        _, _, api = _setup(tmp_path)
        assert api.handle("GET", "/v1/sas", b"").body == {"sas": []}
        assert api.handle("GET", "/nope", b"").status == 404
        assert api.handle("POST", "/v1/revocations", b"{}").status == 400
        server = await serve_tcp(api, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for request, status in [(b"GET /healthz HTTP/1.1\r\n\r\n", b"200"),
                                (b"POST /v1/revocations HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
                                (b"garbage\r\n\r\n", b"400")]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.split(b" ")[1] == status, data
            writer.close()
        server.close()
    asyncio.run(go())
