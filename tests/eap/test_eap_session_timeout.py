"""The responder enforces Session-Timeout itself: an initiator that ignores AUTH_LIFETIME (RFC 4478)
loses its IKE SA after the timeout plus grace, with accounting Stop (Session-Timeout). The peer is
the codec-built initiator doing EAP-GTC (NAK of EAP-TLS, then an RFC 6238 code) through a real
FreeRADIUS with rlm_totp."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gw_initiator import SUITE, PyInitiator, Wire
from gw_pki import build_pki
from radius_lab import FreeRadius, IkepkiPki, totp

from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.auth import signed_octets
from gateway.ikev2.constants import Exchange, Notify
from gateway.policy import Policy
from gateway.radius.client import RadiusClient, Server
from gateway.radius.config import EapConfig
from gateway.responder import Responder, ResponderConfig
from gateway.responder.eap import eap_payload, msk_auth
from gateway.revocation import OcspMode

pytestmark = [pytest.mark.interop, pytest.mark.slow]
PKI = build_pki()
TIMEOUT = 3
SECRET = "timeout-Secret-0042"


@pytest.fixture(scope="module")
def radius(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreeRadius]:
    if os.geteuid() != 0:
        pytest.fail("FreeRADIUS drops to user freerad: run as root")
    d = tmp_path_factory.mktemp("timeout")
    pki = IkepkiPki.create(d)
    cred = pki.issue("radius", "radius", "/O=ikepki test/CN=radius.example.test", "DNS:radius.example.test", d / "c")
    fr = FreeRadius(SECRET, cred, pki.chain_pem(), pki.ocsp_url, session_timeout=TIMEOUT, ocsp=False)
    try:
        fr.start()
        yield fr
    finally:
        fr.cleanup()


def _eap(code: int, ident: int, etype: int, data: bytes) -> c.Unknown:
    return eap_payload(bytes((code, ident)) + (5 + len(data)).to_bytes(2, "big") + bytes((etype,)) + data)


def _eap_in(out: tuple[c.Payload, ...]) -> bytes:
    return next(p.data for p in out if isinstance(p, c.Unknown) and p.raw_type == 48)


def test_responder_deletes_sa_when_session_timeout_passes(radius: FreeRadius, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("rules:\n  - name: staff\n    match: {radius_group: staff}\n"
                                     "    local_ts: ['10.1.0.0/16']\n    remote_ts: ['192.168.0.0/24']\n")
    s = SECRET.encode()
    eap = EapConfig(RadiusClient([Server("127.0.0.1", radius.auth_port, s, "fr")], 2.0, 1), "gw.test",
                    RadiusClient([Server("127.0.0.1", radius.acct_port, s, "fr-acct")], 2.0, 1))
    cfg = ResponderConfig(cert_chain=(PKI.gateway.cert,), key=PKI.gateway.key, roots=(PKI.root.cert,),  # type: ignore[arg-type]
                          policy=Policy.load(tmp_path / "p.yaml"), ocsp_mode=OcspMode.OFF,
                          listen_host="198.51.100.1", eap=eap)
    wire = Wire()
    log = tmp_path / "events.jsonl"
    r = Responder(cfg, wire, EventLog(log))

    async def go() -> list[str]:
        ini = PyInitiator(r, wire, PKI.clients["alice"], b"tina")
        await ini.ike_sa_init()
        idi = c.ID(id_type=2, data=b"tina")
        out = await ini.request(Exchange.IKE_AUTH, [idi])
        req = _eap_in(out)
        out = await ini.request(Exchange.IKE_AUTH, [_eap(2, req[1], 1, b"tina")])
        req = _eap_in(out)
        assert req[4] == 13  # FreeRADIUS proposes EAP-TLS first
        out = await ini.request(Exchange.IKE_AUTH, [_eap(2, req[1], 3, b"\x06")])  # Nak: GTC please
        req = _eap_in(out)
        assert req[4] == 6 and b"TOTP code" in req[5:]
        out = await ini.request(Exchange.IKE_AUTH, [_eap(2, req[1], 6, totp(radius.totp_secret).encode())])
        assert _eap_in(out)[0] == 3  # EAP-Success
        assert ini.keys is not None
        octets = signed_octets(ini.init_request, ini.nr, SUITE.prf, ini.keys.sk_pi, idi.body())
        auth = msk_auth(SUITE.prf, ini.keys.sk_pi, octets)  # GTC has no MSK: SK_pi (RFC 7296 §2.16)
        out = await ini.request(Exchange.IKE_AUTH, [c.Auth(method=2, data=auth)])
        lifetime = next(p for p in out if isinstance(p, c.Notify) and p.notify_type == Notify.AUTH_LIFETIME)
        assert int.from_bytes(lifetime.data, "big") == TIMEOUT
        assert r.established()
        started = time.monotonic()
        while r.established() and time.monotonic() - started < TIMEOUT + 15:
            await asyncio.sleep(0.2)
        assert not r.established(), "SA outlived Session-Timeout + grace"
        assert time.monotonic() - started >= TIMEOUT  # not before the timeout
        deletes = [ini.open(d) for d in wire.take()]
        assert any(isinstance(p, c.Delete) for out in deletes for p in out)  # INFORMATIONAL Delete sent
        await asyncio.sleep(1.0)  # let accounting Stop go out
        return log.read_text().splitlines()

    lines = asyncio.run(go())
    text = "\n".join(lines)
    assert '"event": "reauth_deadline"' in text and '"reason": "session timeout"' in text
    stops = [ln for ln in radius.accounting() if ln.startswith("Stop tina ")]
    assert stops and stops[-1].endswith("Session-Timeout")
