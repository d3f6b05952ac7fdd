"""The responder's EAP state machine driven in-process (codec-built initiator, RADIUS servers that
never answer): every malformed or unexpected EAP input ends in AUTHENTICATION_FAILED, the
responder never waits longer than its RADIUS timeouts, and nothing is established."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from gw_initiator import SUITE, PyInitiator, Wire
from gw_pki import build_pki
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from radius_lab import free_udp

from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.auth import signed_octets
from gateway.ikev2.constants import AuthMethod, Exchange, Notify
from gateway.ikev2.sa import PeerAuth
from gateway.radius import packet as rp
from gateway.radius.client import RadiusClient, Server
from gateway.radius.config import EapConfig
from gateway.responder import Responder, ResponderConfig
from gateway.responder.eap import eap_payload, msk_auth
from gateway.revocation import OcspMode

PKI = build_pki()


def _responder(tmp: Path, ports: list[int] | None = None) -> tuple[Responder, Wire]:
    dead = [Server("127.0.0.1", port, b"s", f"dead{i}") for i, port in enumerate(ports or [free_udp(), free_udp()])]
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
    async def go() -> tuple[tuple[c.Payload, ...], list[int]]:
        dead = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]  # record, never answer
        for s in dead:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        r, wire = _responder(tmp_path, [s.getsockname()[1] for s in dead])
        ini = await _to_identity_request(r, wire)
        assert c.parse_message(ini.init_response).notify(Notify.MULTIPLE_AUTH_SUPPORTED) is not None
        out = await ini.request(Exchange.IKE_AUTH, [eap_payload(b"\x02\x01\x00\x0a\x01alice")])
        counts = []
        for s in dead:
            n = 0
            with contextlib.suppress(BlockingIOError):
                while s.recv(4096):
                    n += 1
            s.close()
            counts.append(n)
        return out, counts

    out, counts = asyncio.run(go())
    assert any(isinstance(p, c.Notify) and p.notify_type == Notify.AUTHENTICATION_FAILED for p in out)
    assert counts == [2, 2]  # both servers tried, each 1 + retries=1 times, then the attempt ends
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


class _AcceptingRadius(asyncio.DatagramProtocol):
    """A RADIUS server for the identity tests only: EAP-Identity gets an MD5 challenge, the
    answer an Access-Accept with EAP-Success (no MSK, so AUTH is keyed with SK_pi, RFC 7296 §2.16), carrying
    ``user_name`` as its User-Name when given (RFC 2865 §5.1)."""

    def __init__(self, secret: bytes, user_name: bytes | None) -> None:
        self.secret, self.user_name = secret, user_name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        req = rp.decode(data)
        eap = req.eap_message()
        if eap[4] == 1:  # Identity: challenge with EAP-MD5 (RFC 3748 §5.4)
            code, attrs = rp.Code.ACCESS_CHALLENGE, [*rp.split_eap(bytes((1, eap[1] + 1, 0, 6, 4, 0))),
                                                      (rp.Attr.STATE, b"st")]
        else:
            code, attrs = rp.Code.ACCESS_ACCEPT, [*rp.split_eap(bytes((3, eap[1], 0, 4)))]
            if self.user_name is not None:
                attrs.append((rp.Attr.USER_NAME, self.user_name))
        assert self.transport is not None
        self.transport.sendto(rp.encode_response(code, req.identifier, attrs, self.secret, req.authenticator), addr)


async def _eap_login(r: Responder, wire: Wire, outer: bytes) -> tuple[c.Payload, ...]:
    """An EAP login claiming ``outer`` as EAP-Identity, with INITIAL_CONTACT."""
    ini = PyInitiator(r, wire, PKI.clients["alice"], outer)
    await ini.ike_sa_init()
    await ini.request(Exchange.IKE_AUTH, [c.ID(id_type=3, data=outer), c.Notify(Notify.INITIAL_CONTACT)])
    await ini.request(Exchange.IKE_AUTH, [eap_payload(b"\x02\x01" + (5 + len(outer)).to_bytes(2, "big")
                                                      + b"\x01" + outer)])
    await ini.request(Exchange.IKE_AUTH, [eap_payload(bytes((2, 2, 0, 6, 4, 0)))])  # EAP-MD5 Response
    assert ini.keys is not None
    idi = c.ID(id_type=3, data=outer)
    octets = signed_octets(ini.init_request, ini.nr, SUITE.prf, ini.keys.sk_pi, idi.body())
    return await ini.request(Exchange.IKE_AUTH, [c.Auth(method=AuthMethod.SHARED_KEY_MIC,
                                                        data=msk_auth(SUITE.prf, ini.keys.sk_pi, octets))])


def test_outer_eap_identity_is_a_claim_until_the_access_accept_names_the_user(tmp_path: Path) -> None:
    """RFC 2865 §5.1: the SA identity, accounting and Disconnect matching use the User-Name the
    server returned; an Access-Accept without one leaves the outer EAP-Identity a claim, and its
    INITIAL_CONTACT deletes nobody else's SAs (RFC 7296 §2.4)."""
    async def go(returned: bytes | None) -> tuple[list[str], PeerAuth, list[str], list[str]]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _AcceptingRadius(b"s", returned),
                                                           local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            cfg = ResponderConfig(cert_chain=(PKI.gateway.cert,), key=PKI.gateway.key,  # type: ignore[arg-type]
                                  roots=(PKI.root.cert,), ocsp_mode=OcspMode.OFF, listen_host="198.51.100.1",
                                  eap=EapConfig(RadiusClient([Server("127.0.0.1", port, b"s", "ok")],
                                                             timeout=2, retries=1)))
            wire = Wire()
            r = Responder(cfg, wire, EventLog(tmp_path / f"{returned!r}.jsonl"))
            ini = PyInitiator(r, wire, PKI.clients["bob"], b"bob@example.test")
            await ini.establish()  # the victim: certificate login as bob@example.test
            out = await _eap_login(r, wire, b"bob@example.test")  # the attacker claims bob's name
            assert any(isinstance(p, c.Auth) for p in out), out
            ids = sorted(str(sa.auth.identity) for sa in r.established() if sa.auth)
            (eap_sa,) = [sa for sa in r.established() if sa.auth and sa.auth.eap_method]
            assert eap_sa.auth is not None
            dae = [sa.name for name in ("bob@example.test", "mallory@example.test")
                   for sa in r.disconnect(name, None, None)]
            return ids, eap_sa.auth, dae, [eap_sa.name]
        finally:
            transport.close()

    ids, auth, dae, eap_sa = asyncio.run(go(None))
    assert ids == ["bob@example.test", "bob@example.test"], "an unconfirmed claim drops nobody"
    assert not auth.identity_verified

    ids, auth, dae, eap_sa = asyncio.run(go(b"mallory@example.test"))
    assert ids == ["bob@example.test", "mallory@example.test"]
    assert auth.identity_verified and auth.eap_identity == "mallory@example.test"
    assert dae == eap_sa  # RFC 5176 Disconnect matches the authenticated name, not the claim
