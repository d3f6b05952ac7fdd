"""Fixtures for the responder tests: a test PKI, responders and one charon initiator."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from gw_lab import POLICY, Lab
from gw_ocsp import OcspServer
from gw_pki import build_pki, make_root
from gw_procs import Charon, Conn, ResponderProc, free_port, free_udp_pair


def _need_root() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not Path("/usr/lib/ipsec/charon").exists():
        pytest.fail("interop tests need root, unshare and strongSwan charon")


def _responder(d: Path, name: str, args: list[str]) -> ResponderProc:
    state = d / name
    state.mkdir()
    return ResponderProc(state, free_port(), free_port(0x1), [
        "--cert", str(d / "gw.pem"), "--key", str(d / "gw.key"), "--ca-bundle", str(d / "root.pem"), *args])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _need_root()
    d = tmp_path_factory.mktemp("gwlab")
    ocsp = OcspServer(make_root("placeholder"))
    ocsp.start()
    pki = build_pki(ocsp.url)
    rita = pki.clients["rita"].cert
    ocsp.issuer, ocsp.certs, ocsp.revoked = pki.root, {rita.serial_number: rita}, {rita.serial_number}
    pki.write(d)
    (d / "policy.yaml").write_text(POLICY)
    main = _responder(d, "main", ["--policy", str(d / "policy.yaml"), "--ocsp", "relaxed"])
    nopol = _responder(d, "nopol", ["--ocsp", "off", "--dh-groups", "31,19"])
    cookie = _responder(d, "cookie", ["--ocsp", "off", "--cookie-threshold", "0", "--fragment-size", "500"])
    port, nat = free_udp_pair()
    charon = Charon(d / "charon", port, nat)
    conns = [
        Conn("alice", "alice", "alice@example.test"),
        Conn("bob", "bob", "bob@example.test"),
        Conn("carol", "carol", "carol@example.test"),
        Conn("dave", "dave", "dave.example.test", extra="dpd_delay = 1s"),
        Conn("erin", "erin", "erin@example.test", proposals="chacha20poly1305-prfsha384-ecp384"),
        Conn("frank", "frank", "frank@example.test", proposals="aes128gcm16-prfsha512-ecp521"),
        Conn("mallory", "mallory", "mallory@example.test"),
        Conn("olga", "olga", "olga@example.test"),
        Conn("walt", "walt", "walt@example.test"),
        Conn("rita", "rita", "rita@example.test"),
        Conn("legacy", "alice", "alice@example.test", proposals="aes256-sha1-modp1024"),
        Conn("x25519first", "erin", "erin@example.test", proposals="aes256gcm16-prfsha256-x25519-ecp256"),
        Conn("wrongid", "alice", "mallory@example.test"),
        Conn("alice-dn", "alice", '"O=ikepki test, OU=staff, CN=alice"'),
        Conn("ivan", "ivan", "127.0.0.1"),
        Conn("alice-mobike", "alice", "alice@example.test", mobike=True),
        Conn("frank-pss", "frank", "frank@example.test", auth="rsa/pss-sha256"),
    ]
    remote = {"main": main, "nopol": nopol, "cookie": cookie}
    charon.state.mkdir()
    charon.write_config(conns, main.port, {n: (i.cert_pem(), i.key_pem()) for n, i in pki.clients.items()},
                        {"root": pki.root.cert_pem(), "foreign": pki.foreign.cert_pem()})
    extra = [
        Conn("alice-nopol", "alice", "alice@example.test"),
        Conn("ecpfirst-nopol", "alice", "alice@example.test", proposals="aes256gcm16-prfsha256-ecp256-x25519"),
        Conn("alice-cookie", "alice", "alice@example.test"),
    ]
    conf = charon.state / "swanctl" / "swanctl.conf"
    text = conf.read_text().rstrip().rstrip("}")
    text += extra[0].render(nopol.port, port) + extra[1].render(nopol.port, port)
    text += extra[2].render(cookie.port, port) + "\n}\n"
    conf.write_text(text)
    started: list[ResponderProc | Charon] = []
    port2, nat2 = free_udp_pair()
    classic = Charon(d / "classic", port2, nat2, settings="signature_authentication = no\n  fragment_size = 500")
    classic.state.mkdir()
    frag = Conn("alice-frag", "alice", "alice@example.test")
    classic.write_config([Conn(f"{n}-classic", n, f"{n}@example.test") for n in ("alice", "erin", "gina")],
                         main.port, {n: (i.cert_pem(), i.key_pem()) for n, i in pki.clients.items()},
                         {"root": pki.root.cert_pem()})
    conf = classic.state / "swanctl" / "swanctl.conf"
    conf.write_text(conf.read_text().rstrip().rstrip("}") + frag.render(cookie.port, port2) + "\n}\n")
    procs: list[ResponderProc | Charon] = [*remote.values(), charon, classic]
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
        yield Lab(pki, main, nopol, cookie, charon, classic, d)
    finally:
        for proc in reversed(started):
            proc.stop()
        ocsp.stop()
