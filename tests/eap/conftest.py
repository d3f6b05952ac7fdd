"""The EAP lab: ikepki CA + OCSP responder, FreeRADIUS, the bundled responder relaying EAP to it,
and a strongSwan charon initiator (machine certificate + user EAP, RFC 4739)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from eap_lab import EAP_PLUGINS, STAFF_RULE, EapConn, EapLab
from gw_procs import Charon, ResponderProc, free_port, free_udp_pair
from radius_lab import FreeRadius, IkepkiPki, free_udp

SECRET = "eap-lab-Secret-7f3a9c"
DAE_SECRET = "eap-lab-dae-91b2"
SESSION_TIMEOUT = 6

POLICY = f"""
rules:{STAFF_RULE}
  - name: guests
    match:
      radius_group: guests
    require: [eap]
    local_ts: ["10.231.9.0/24[tcp/443]"]
    remote_ts: ["10.231.0.0/16"]
"""


def _need_root() -> None:
    for tool in ("/usr/sbin/freeradius", "/usr/bin/eapol_test", "/usr/lib/ipsec/charon"):
        if not Path(tool).exists():
            pytest.fail(f"EAP interop tests need {tool}")
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("EAP interop tests need root and unshare")


def _radius_yaml(path: Path, secret_file: Path, auth_port: int, acct_port: int, dae_port: int,
                 dae_secret: Path) -> None:
    path.write_text(f"""
nas_identifier: gw.example.test
timeout: 1
retries: 1
servers:
  - {{host: 127.0.0.1, port: {free_udp()}, secret: "file:{secret_file}", name: dead-primary}}
  - {{host: 127.0.0.1, port: {auth_port}, secret: "file:{secret_file}", name: freeradius}}
accounting:
  - {{host: 127.0.0.1, port: {acct_port}, secret: "file:{secret_file}"}}
dae:
  listen: 127.0.0.1:{dae_port}
  secret: "file:{dae_secret}"
  clients: [127.0.0.1]
""")


@pytest.fixture(scope="module")
def eap_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EapLab]:
    _need_root()
    d = tmp_path_factory.mktemp("eaplab")
    pki = IkepkiPki.create(d)
    pki.start_ocsp()
    certs = d / "certs"
    creds = {
        "radius": pki.issue("radius", "radius", "/O=ikepki test/CN=radius.example.test",
                            "DNS:radius.example.test", certs),
        "gw": pki.issue("gw", "gateway", "/O=ikepki test/CN=gw.example.test", "DNS:gw.example.test", certs),
        "laptop": pki.issue("laptop", "machine", "/O=ikepki test/CN=laptop1.example.test",
                            "DNS:laptop1.example.test", certs),
    }
    for user in ("alice", "bob", "rita", "dora"):
        creds[user] = pki.issue(user, "user", f"/O=ikepki test/CN={user}", f"email:{user}@example.test", certs)
    radius = FreeRadius(SECRET, creds["radius"], pki.chain_pem(), pki.ocsp_url, session_timeout=SESSION_TIMEOUT)
    started: list[ResponderProc | Charon | FreeRadius] = []
    try:
        radius.start()
        started.append(radius)
        (d / "radius.secret").write_text(SECRET + "\n")
        (d / "wrong.secret").write_text("not-the-secret\n")
        (d / "dae.secret").write_text(DAE_SECRET + "\n")
        os.chmod(d / "radius.secret", 0o600)
        dae_port = free_udp()
        _radius_yaml(d / "radius.yaml", d / "radius.secret", radius.auth_port, radius.acct_port, dae_port,
                     d / "dae.secret")
        _radius_yaml(d / "bad.yaml", d / "wrong.secret", radius.auth_port, radius.acct_port, free_udp(),
                     d / "dae.secret")
        (d / "policy.yaml").write_text(POLICY)
        (d / "bundle.pem").write_bytes(pki.chain_pem())
        (d / "gw.pem").write_bytes(creds["gw"].cert.read_bytes())
        common = ["--cert", str(d / "gw.pem"), "--key", str(creds["gw"].key), "--ca-bundle", str(d / "bundle.pem"),
                  "--policy", str(d / "policy.yaml"), "--ocsp", "relaxed"]
        (d / "gw").mkdir()
        (d / "bad").mkdir()
        gw = ResponderProc(d / "gw", free_port(), free_port(0x1), [*common, "--radius", str(d / "radius.yaml")])
        bad = ResponderProc(d / "bad", free_port(), free_port(0x1), [*common, "--radius", str(d / "bad.yaml")])
        for proc in (gw, bad):
            proc.start()
            started.append(proc)
        port, nat = free_udp_pair()
        charon = Charon(d / "charon", port, nat, kernel_plugins=EAP_PLUGINS)
        charon.state.mkdir()
        conns = [
            EapConn("alice", "laptop", "laptop1.example.test", eap_id="alice@example.test", user_cert="alice"),
            EapConn("bob", "laptop", "laptop1.example.test", eap_id="bob@example.test", user_cert="bob", vip=True,
                    local_ts="10.231.0.0/16", remote_ts="10.231.9.0/24"),
            EapConn("bob-eaponly", "", "bob@example.test", eap_id="bob@example.test", user_cert="bob",
                    local_ts="10.231.0.0/16", remote_ts="10.231.9.0/24"),
            EapConn("alice-eaponly", "", "alice@example.test", eap_id="alice@example.test", user_cert="alice"),
            EapConn("rita", "laptop", "laptop1.example.test", eap_id="rita@example.test", user_cert="rita"),
            EapConn("dora", "laptop", "laptop1.example.test", eap_id="dora@example.test", user_cert="dora"),
            EapConn("carl", "laptop", "laptop1.example.test", eap="eap-gtc", eap_id="carl"),
        ]
        pem = {n: (c.cert.read_bytes(), c.key.read_bytes()) for n, c in creds.items()
               if n in ("laptop", "alice", "bob", "rita", "dora")}
        charon.write_config(conns, gw.port, pem, {"root": pki.roots.read_bytes(),
                                                   "issuing": (pki.dir / "ca" / "ec.pem").read_bytes()})
        conf = charon.state / "swanctl" / "swanctl.conf"
        extra = EapConn("alice-bad", "laptop", "laptop1.example.test", eap_id="alice@example.test", user_cert="alice")
        conf.write_text(conf.read_text().rstrip().rstrip("}") + extra.render(bad.port, port) + "\n}\n")
        charon.start()
        started.append(charon)
        yield EapLab(pki, radius, gw, bad, charon, creds, d, dae_port)
    finally:
        for proc in reversed(started):
            proc.stop()
        radius.cleanup(keep=d / "radiusd.log")
        pki.stop()
