"""CHILD_SAs end to end: charon with kernel-libipsec (userspace ESP, strongSwan note §2 option 2)
in a network namespace of its own, with the ikepki responder in the same namespace.

charon installs the CHILD_SA we negotiate (policy-narrowed selectors), rekeys it with
CREATE_CHILD_SA (RFC 7296 §1.3.3), moves it across an IKE rekey (§2.18), deletes it (§1.4.1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gw_lab import POLICY
from gw_pki import GwPki, build_pki
from gw_procs import Charon, Conn, ResponderProc

from tests.swan_harness import Netns, wait_until

pytestmark = [pytest.mark.interop]


@dataclass
class ChildLab:
    pki: GwPki
    responder: ResponderProc
    charon: Charon


@pytest.fixture(scope="module")
def child_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildLab]:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.fail("needs root and /dev/net/tun (kernel-libipsec)")
    d = tmp_path_factory.mktemp("childlab")
    # the local TS must contain a local address of the libipsec charon (note §2)
    with Netns(f"ikepki-gw-{os.getpid()}", lo_addrs=["10.231.2.1/32"]) as netns:
        yield from _lab(d, netns.wrap)


def _lab(d: Path, wrap: tuple[str, ...]) -> Iterator[ChildLab]:
    pki = build_pki()
    pki.write(d)
    (d / "policy.yaml").write_text(POLICY)
    (d / "r").mkdir()
    responder = ResponderProc(d / "r", 15500, 18443, [
        "--cert", str(d / "gw.pem"), "--key", str(d / "gw.key"), "--ca-bundle", str(d / "root.pem"),
        "--ocsp", "off", "--policy", str(d / "policy.yaml")], wrap=wrap)
    charon = Charon(d / "c", 25500, 25501, wrap=wrap, kernel_plugins="kernel-libipsec kernel-netlink")
    charon.state.mkdir()
    alice = pki.clients["alice"]
    charon.write_config([Conn("alice", "alice", "alice@example.test", local_ts="10.231.2.1/32")], 15500,
                        {"alice": (alice.cert_pem(), alice.key_pem())}, {"root": pki.root.cert_pem()})
    responder.start()
    try:
        charon.start()
        try:
            yield ChildLab(pki, responder, charon)
        finally:
            charon.stop()
    finally:
        responder.stop()


def _children(lab: ChildLab) -> list[dict[str, Any]]:
    sas = [sa for sa in lab.responder.sas() if sa["state"] == "established"]
    return [ch for sa in sas for ch in sa["children"]]


def _charon_children(lab: ChildLab) -> list[dict[str, Any]]:
    return [dict(ch) for sa in lab.charon.sas_of("alice") for ch in sa.get("child-sas", {}).values()]


def test_child_sa_installed_with_narrowed_selectors(child_lab: ChildLab) -> None:
    ok, log = child_lab.charon.initiate("alice", "net")
    assert ok, log
    assert "CHILD_SA net{1} established" in log and "TS 10.231.2.1/32 === 10.231.1.0/24" in log
    (theirs,) = _charon_children(child_lab)
    assert theirs["state"] == b"INSTALLED" and theirs["encr-alg"] == b"AES_GCM_16"
    (mine,) = _children(child_lab)
    assert (mine["spi_in"], mine["spi_out"]) == (theirs["spi-out"].decode(), theirs["spi-in"].decode())
    assert mine["remote_ts"] == ["10.231.2.1/32"] and mine["local_ts"] == ["10.231.1.0/24"]


def test_child_rekey_replaces_the_child(child_lab: ChildLab) -> None:
    (before,) = _children(child_lab)
    child_lab.charon.session().rekey({"child": "net"})
    assert wait_until(lambda: len(_children(child_lab)) == 1 and _children(child_lab)[0]["spi_in"] != before["spi_in"])
    assert wait_until(lambda: [c["state"] for c in _charon_children(child_lab)] == [b"INSTALLED"])
    (theirs,) = _charon_children(child_lab)
    assert theirs["spi-out"].decode() == _children(child_lab)[0]["spi_in"]
    assert any(e["event"] == "child_sa_rekey" for e in child_lab.responder.events())


def test_ike_rekey_keeps_the_child(child_lab: ChildLab) -> None:
    (child,) = _children(child_lab)
    (old,) = [sa["ike_sa"] for sa in child_lab.responder.sas() if sa["state"] == "established"]
    child_lab.charon.rekey("alice")
    assert wait_until(lambda: [sa["ike_sa"] for sa in child_lab.responder.sas() if sa["state"] == "established"]
                      not in ([old], []))
    assert _children(child_lab) == [child]
    assert [c["state"] for c in _charon_children(child_lab)] == [b"INSTALLED"]


def test_child_delete_keeps_ike_sa(child_lab: ChildLab) -> None:
    for _ in child_lab.charon.session().terminate({"child": "net", "timeout": "5000"}):
        pass
    assert wait_until(lambda: _children(child_lab) == [])
    assert child_lab.charon.sas_of("alice") and not _charon_children(child_lab)
    assert any(e["event"] == "child_sa_down" for e in child_lab.responder.events())
