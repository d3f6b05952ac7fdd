"""Production ports: responder on UDP 500 + 4500 in one network namespace, charon on 500/4500
in another, joined by a veth pair (strongSwan note §1, §4).

IKE_SA_INIT travels 500→500 without the non-ESP marker; with MOBIKE charon floats to
4500→4500 (marker) for IKE_AUTH; our Delete on revocation follows it there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from gw_pki import GwPki, build_pki
from gw_procs import Charon, Conn, ResponderProc

from ca.revocation_event import RevocationEvent, now_rfc3339, sign_event
from gateway.certs import key_id
from tests.swan_harness import Netns, veth, wait_until

pytestmark = [pytest.mark.interop]
GW, CL = "10.231.100.1", "10.231.100.2"


@dataclass
class PortLab:
    pki: GwPki
    responder: ResponderProc
    charon: Charon


@pytest.fixture(scope="module")
def port_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortLab]:
    if os.geteuid() != 0:
        pytest.fail("needs root for network namespaces")
    tag = f"{os.getpid() % 100000}"
    with Netns(f"ikepki-p500g-{tag}") as ns_gw, Netns(f"ikepki-p500c-{tag}") as ns_cl:
        veth(ns_gw, f"vg{tag}", f"{GW}/24", ns_cl, f"vc{tag}", f"{CL}/24")
        yield from _lab(tmp_path_factory.mktemp("ports500"), ns_gw, ns_cl)


def _lab(d: Path, ns_gw: Netns, ns_cl: Netns) -> Iterator[PortLab]:
    pki = build_pki()
    pki.write(d)
    (d / "r").mkdir()
    responder = ResponderProc(d / "r", 500, 8444, [
        "--cert", str(d / "gw.pem"), "--key", str(d / "gw.key"), "--ca-bundle", str(d / "root.pem"),
        "--ocsp", "off", "--nat-port", "4500"], wrap=ns_gw.wrap, host="0.0.0.0")
    charon = Charon(d / "c", 500, 4500, wrap=ns_cl.wrap)
    charon.state.mkdir()
    alice, carol = pki.clients["alice"], pki.clients["carol"]
    conns = [Conn("float", "alice", "alice@example.test", mobike=True, local_addr=CL, remote_addr=GW),
             Conn("fixed", "carol", "carol@example.test", local_addr=CL, remote_addr=GW)]
    charon.write_config(conns, 500, {"alice": (alice.cert_pem(), alice.key_pem()),
                                     "carol": (carol.cert_pem(), carol.key_pem())}, {"root": pki.root.cert_pem()})
    responder.start()
    try:
        charon.start()
        try:
            yield PortLab(pki, responder, charon)
        finally:
            charon.stop()
    finally:
        responder.stop()


def _mine(lab: PortLab, conn: str) -> dict:
    spi = lab.charon.sas_of(conn)[-1]["initiator-spi"].decode()
    (sa,) = [sa for sa in lab.responder.sas() if sa["ike_sa"].startswith(spi)]
    return sa


def test_mobike_floats_to_4500_with_marker(port_lab: PortLab) -> None:
    ok, log = port_lab.charon.initiate("float")
    assert ok, log
    assert f"sending packet: from {CL}[500] to {GW}[500]" in log
    assert f"sending packet: from {CL}[4500] to {GW}[4500]" in log
    sa = _mine(port_lab, "float")
    assert sa["peer"] == f"{CL}:4500" and sa["local_port"] == 4500 and sa["state"] == "established"
    theirs = port_lab.charon.sas_of("float")[-1]
    assert "nat-local" not in theirs and "nat-remote" not in theirs, \
        "NAT-D from a wildcard-bound responder hashes the real source address: no NAT detected"
    assert "behind NAT" not in log


def test_without_mobike_everything_stays_on_500(port_lab: PortLab) -> None:
    ok, log = port_lab.charon.initiate("fixed")
    assert ok, log
    # charon's own view of this SA (its VICI log stream also carries other SAs' 4500 traffic)
    (mine,) = port_lab.charon.sas_of("fixed")
    assert (mine["local-port"], mine["remote-port"]) == (b"500", b"500"), mine
    sa = _mine(port_lab, "fixed")
    assert sa["peer"] == f"{CL}:500" and sa["local_port"] == 500


def test_revocation_delete_reaches_the_floated_peer(port_lab: PortLab) -> None:
    """Pushed over the Unix control socket, which serves the same API as the push listener."""
    alice = port_lab.pki.clients["alice"]
    ev = RevocationEvent(event_id=str(uuid.uuid4()), type="revoked", issuer="CN=ikepki test root",
                         issuer_key_id=key_id(port_lab.pki.root.cert), serial=alice.serial_hex,
                         reason="keyCompromise", revoked_at=now_rfc3339(), created_at=now_rfc3339())
    signer = port_lab.pki.push_signer.key
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    body = sign_event(ev, signer, [port_lab.pki.push_signer.cert]).encode()
    answer = port_lab.responder.control_get("/v1/revocations", "POST", body)
    assert answer == {"accepted": True, "terminated_sas": 1, "duplicate": False}
    assert wait_until(lambda: not port_lab.charon.sas_of("float"))
    assert port_lab.charon.sas_of("fixed"), "carol's SA is untouched"
