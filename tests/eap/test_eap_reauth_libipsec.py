"""Session-Timeout forces re-authentication, end to end with a CHILD_SA: charon with kernel-libipsec
(userspace ESP; strongSwan note §2 option 2), the responder and FreeRADIUS in a network namespace
``eap-<pid>`` of their own. charon re-authenticates (RFC 4478 AUTH_LIFETIME) through EAP-TLS and
RADIUS again before the Session-Timeout ends."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eap_lab import EAP_PLUGINS, STAFF_RULE, EapConn
from gw_procs import Charon, ResponderProc
from radius_lab import FreeRadius, IkepkiPki

from tests.swan_harness import Netns

pytestmark = [pytest.mark.interop, pytest.mark.slow]
SESSION_TIMEOUT = 12
OVER_TIME = 8  # charon re-authenticates AUTH_LIFETIME - over_time seconds after establishment

POLICY = f"rules:{STAFF_RULE}"


@pytest.fixture(scope="module")
def reauth_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ResponderProc, Charon, FreeRadius]]:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.fail("needs root and /dev/net/tun (kernel-libipsec)")
    d = tmp_path_factory.mktemp("eapreauth")
    netns = Netns(f"eap-{os.getpid()}", lo_addrs=["10.231.2.1/32"])
    wrap = netns.wrap
    pki = IkepkiPki.create(d)
    certs = d / "certs"
    radius_cred = pki.issue("radius", "radius", "/O=ikepki test/CN=radius.example.test", "DNS:radius.example.test",
                            certs)
    gw = pki.issue("gw", "gateway", "/O=ikepki test/CN=gw.example.test", "DNS:gw.example.test", certs)
    laptop = pki.issue("laptop", "machine", "/O=ikepki test/CN=laptop1.example.test", "DNS:laptop1.example.test",
                       certs)
    dora = pki.issue("dora", "user", "/O=ikepki test/CN=dora", "email:dora@example.test", certs)
    netns.create()
    started: list[ResponderProc | Charon | FreeRadius] = []
    radius = FreeRadius("reauth-secret-4411", radius_cred, pki.chain_pem(), pki.ocsp_url,
                        session_timeout=SESSION_TIMEOUT, ocsp=False, wrap=wrap, auth_port=11812, acct_port=11813)
    try:
        radius.start()
        started.append(radius)
        (d / "radius.secret").write_text("reauth-secret-4411\n")
        (d / "radius.yaml").write_text(f"""
servers:
  - {{host: 127.0.0.1, port: 11812, secret: "file:{d / 'radius.secret'}"}}
timeout: 2
""")
        (d / "policy.yaml").write_text(POLICY)
        (d / "bundle.pem").write_bytes(pki.chain_pem())
        (d / "r").mkdir()
        responder = ResponderProc(d / "r", 15500, 18443, [
            "--cert", str(gw.cert), "--key", str(gw.key), "--ca-bundle", str(d / "bundle.pem"), "--ocsp", "off",
            "--policy", str(d / "policy.yaml"), "--radius", str(d / "radius.yaml")], wrap=wrap)
        responder.start()
        started.append(responder)
        charon = Charon(d / "c", 25500, 25501, wrap=wrap, kernel_plugins=f"kernel-libipsec {EAP_PLUGINS}")
        charon.state.mkdir()
        conn = EapConn("dora", "laptop", "laptop1.example.test", eap_id="dora@example.test", user_cert="dora",
                       local_ts="10.231.2.1/32", extra=f"over_time = {OVER_TIME}s")
        charon.write_config([conn], 15500, {"laptop": (laptop.cert.read_bytes(), laptop.key.read_bytes()),
                                            "dora": (dora.cert.read_bytes(), dora.key.read_bytes())},
                            {"root": pki.roots.read_bytes(), "issuing": (pki.dir / "ca" / "ec.pem").read_bytes()})
        charon.start()
        started.append(charon)
        yield responder, charon, radius
    finally:
        for proc in reversed(started):
            proc.stop()
        radius.cleanup()
        netns.delete()


def test_session_timeout_forces_reauthentication(reauth_lab: tuple[ResponderProc, Charon, FreeRadius]) -> None:
    responder, charon, radius = reauth_lab
    ok, log = charon.initiate("dora", "net")
    assert ok, log
    assert "CHILD_SA net{1} established" in log
    assert f"received AUTH_LIFETIME of {SESSION_TIMEOUT}s" in log
    first = [e for e in responder.events() if e["event"] == "ike_sa_up"]
    assert len(first) == 1 and first[0]["auth_lifetime"] == SESSION_TIMEOUT
    deadline = time.monotonic() + SESSION_TIMEOUT + 10
    ups: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(ups) < 2:
        ups = [e for e in responder.events()
               if e["event"] == "ike_sa_up" and e.get("eap_identity") == "dora@example.test"]
        time.sleep(0.2)
    assert len(ups) >= 2, "charon did not re-authenticate"
    assert ups[1]["ike_sa"] != ups[0]["ike_sa"] and ups[1]["eap_method"] == "tls"
    assert radius.log().count("Login OK: [dora@example.test]") >= 2  # RADIUS asked again
    assert "reauthenticating IKE_SA dora[1]" in charon.log()
    children = [ch for sa in responder.sas() if sa["state"] == "established" for ch in sa["children"]]
    assert children and children[-1]["remote_ts"] == ["10.231.2.1/32"]
