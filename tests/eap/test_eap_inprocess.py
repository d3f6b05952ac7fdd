"""The responder's EAP state machine driven in-process (codec-built initiator, RADIUS servers that
never answer): every malformed or unexpected EAP input ends in AUTHENTICATION_FAILED, the
responder never waits longer than its RADIUS timeouts, and nothing is established."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gw_initiator import PyInitiator, Wire
from gw_pki import build_pki
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from radius_lab import free_udp

from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.constants import Exchange, Notify
from gateway.radius.client import RadiusClient, Server
from gateway.radius.config import EapConfig
from gateway.responder import Responder, ResponderConfig
from gateway.responder.eap import eap_payload
from gateway.revocation import OcspMode

PKI = build_pki()


def _responder(tmp: Path) -> tuple[Responder, Wire]:
    dead = [Server("127.0.0.1", free_udp(), b"s", f"dead{i}") for i in range(2)]
    cfg = ResponderConfig(cert_chain=(PKI.gateway.cert,), key=PKI.gateway.key, roots=(PKI.root.cert,),  # type: ignore[arg-type]
                          ocsp_mode=OcspMode.OFF, listen_host="198.51.100.1",
                          eap=EapConfig(RadiusClient(dead, timeout=0.05, retries=1)))
    wire = Wire()
    return Responder(cfg, wire, EventLog(tmp / "events.jsonl")), wire


async def _to_identity_request(r: Responder, wire: Wire) -> PyInitiator:
    ini = PyInitiator(r, wire, PKI.clients["alice"], b"alice@example.test")
    await ini.ike_sa_init()
    out = await ini.request(Exchange.IKE_AUTH, [c.ID(id_type=3, data=ini.identity)])
    assert any(isinstance(p, c.Auth) for p in out)  # our certificate AUTH first (RFC 7296 §2.16)
    eap = next(p for p in out if isinstance(p, c.Unknown) and p.raw_type == 48)
    assert eap.data[0] == 1 and eap.data[4] == 1  # EAP-Request/Identity
    return ini


def test_multiple_auth_announced_and_dead_radius_fails_in_bounded_time(tmp_path: Path) -> None:
    async def go() -> tuple[tuple[c.Payload, ...], float]:
        r, wire = _responder(tmp_path)
        ini = await _to_identity_request(r, wire)
        assert c.parse_message(ini.init_response).notify(Notify.MULTIPLE_AUTH_SUPPORTED) is not None
        started = time.monotonic()
        out = await ini.request(Exchange.IKE_AUTH, [eap_payload(b"\x02\x01\x00\x0a\x01alice")])
        return out, time.monotonic() - started

    out, took = asyncio.run(go())
    assert any(isinstance(p, c.Notify) and p.notify_type == Notify.AUTHENTICATION_FAILED for p in out)
    assert took < 10  # bounded (2 servers x 2 tries x 0.05 s), not a benchmark
    events = (tmp_path / "events.jsonl").read_text()
    assert "no valid answer" in events and "dead0" in events and "dead1" in events


def test_auth_without_eap_is_refused(tmp_path: Path) -> None:
    async def go() -> tuple[c.Payload, ...]:
        r, wire = _responder(tmp_path)
        ini = await _to_identity_request(r, wire)
        return await ini.request(Exchange.IKE_AUTH, [c.Auth(method=2, data=bytes(32))])

    out = asyncio.run(go())
    assert [p.notify_type for p in out if isinstance(p, c.Notify)] == [Notify.AUTHENTICATION_FAILED]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_fuzz_eap_payloads(tmp_path: Path, data: bytes) -> None:
    async def go() -> tuple[tuple[c.Payload, ...], Responder]:
        r, wire = _responder(tmp_path)
        ini = await _to_identity_request(r, wire)
        return await ini.request(Exchange.IKE_AUTH, [eap_payload(data)]), r

    out, r = asyncio.run(go())
    assert any(isinstance(p, c.Notify) and p.notify_type == Notify.AUTHENTICATION_FAILED for p in out)
    assert not r.established()


def test_bad_radius_configuration_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    PKI.write(tmp_path)
    (tmp_path / "secret").write_text("")
    cases = {
        'servers:\n  - {host: 127.0.0.1, secret: "plain-text"}\n': "file:PATH or env:NAME",
        "servers: []\n": "non-empty list of servers",
        f'servers:\n  - {{host: 127.0.0.1, secret: "file:{tmp_path / "secret"}"}}\n': "is empty",
        f'timeout: 99\nservers:\n  - {{host: 127.0.0.1, secret: "file:{tmp_path / "gw.pem"}"}}\n': "timeout",
    }
    for i, (doc, why) in enumerate(cases.items()):
        (tmp_path / f"r{i}.yaml").write_text(doc)
        proc = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0",
                               "--cert", str(tmp_path / "gw.pem"), "--key", str(tmp_path / "gw.key"),
                               "--ca-bundle", str(tmp_path / "root.pem"), "--radius", str(tmp_path / f"r{i}.yaml"),
                               "--control", str(tmp_path / "c.sock")],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2 and why in proc.stderr, (doc, proc.stderr)
        assert "plain-text" not in proc.stderr  # a secret given inline is not echoed


def test_rfc4739_second_round(tmp_path: Path) -> None:
    """Certificate round with ANOTHER_AUTH_FOLLOWS gets IDr/CERT/AUTH only; the second IDi gets
    EAP-Request/Identity; a second round that is not EAP is refused."""
    async def go(second: list[c.Payload]) -> tuple[tuple[c.Payload, ...], tuple[c.Payload, ...]]:
        r, wire = _responder(tmp_path)
        ini = PyInitiator(r, wire, PKI.clients["alice"], b"alice@example.test")
        await ini.ike_sa_init()
        first = await ini.request(Exchange.IKE_AUTH, [*ini.auth_payloads(),
                                                      c.Notify(Notify.ANOTHER_AUTH_FOLLOWS)])
        return first, await ini.request(Exchange.IKE_AUTH, second)

    first, out = asyncio.run(go([c.ID(id_type=3, data=b"alice@example.test")]))
    assert [type(p) for p in first if not isinstance(p, c.Cert)] == [c.ID, c.Auth]
    eap = next(p for p in out if isinstance(p, c.Unknown) and p.raw_type == 48)
    assert eap.data[0] == 1 and eap.data[4] == 1
    events = (tmp_path / "events.jsonl").read_text()
    assert '"event": "auth_round_done"' in events and '"ike_sa_up"' not in events
    _, out = asyncio.run(go([c.ID(id_type=3, data=b"alice@example.test"), c.Auth(method=2, data=bytes(32))]))
    assert [p.notify_type for p in out if isinstance(p, c.Notify)] == [Notify.AUTHENTICATION_FAILED]
    assert "the second authentication round must be EAP" in (tmp_path / "events.jsonl").read_text()
