"""The whole path with real peers: ``ikepki user enroll`` (device grant at npm oidc-provider) ->
the user certificate authenticates a strongSwan initiator to the bundled IKEv2 responder, whose
policy maps the IdP group (CA-mapped to the subject's OU role) to traffic selectors; another
group gets other selectors; signing out at the provider (OIDC back-channel logout) holds the
certificate, the revocation push deletes the SA on the responder and the reconnect fails."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gw_procs import Charon, Conn, ResponderProc, free_udp_pair

from tests.conftest import free_port
from tests.oidc.conftest import OidcRig
from tests.oidc.test_enroll import cli_enroll

pytestmark = [pytest.mark.interop, pytest.mark.slow]

POLICY = """
role_attribute: OU
rules:
  - name: staff
    match: {role: staff}
    local_ts: ["10.231.1.0/24"]
    remote_ts: ["10.231.2.0/24"]
  - name: contractors
    match: {role: contractors}
    local_ts: ["10.231.9.0/24"]
    remote_ts: ["10.231.2.0/24"]
"""


def wait_for(predicate: Any, timeout: float, step: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    return predicate()


def gateway_cert(rig: OidcRig, d: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                              "gw")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.example.test")]), critical=False)
           .sign(key, hashes.SHA256()))
    (d / "gw.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (d / "gw.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    rig.ikepki("issue", "--csr", str(d / "gw.csr"), "--profile", "gateway", "--out", str(d / "gw.pem"))
    return d / "gw.pem", d / "gw.key"


@contextlib.contextmanager
def policy_responder(rig: Any, d: Path, name_prefix: str) -> Iterator[tuple[ResponderProc, int, str]]:
    """The bundled IKEv2 responder with a gateway certificate and POLICY, registered as a push
    target (``rig`` duck-typed: ``dir`` and ``ikepki``); yields it, its IKE port and its name."""
    gw_pem, gw_key = gateway_cert(rig, d)
    (d / "policy.yaml").write_text(POLICY)
    ike, _nat = free_udp_pair()
    responder = ResponderProc(d / "responder", ike, free_port(), [
        "--cert", str(gw_pem), "--key", str(gw_key), "--ca-bundle", str(rig.dir / "root-ca.pem"),
        "--policy", str(d / "policy.yaml"), "--ocsp", "off"])
    responder.state.mkdir()
    responder.start()
    name = f"{name_prefix}-{ike}"
    try:
        rig.ikepki("gateways", "add", "--name", name, "--kind", "responder", "--url", responder.url)
        yield responder, ike, name
    finally:
        rig.ikepki("gateways", "disable", "--name", name, check=False)
        responder.stop()


def test_idp_group_selects_traffic_and_logout_deletes_the_sa(rig: OidcRig, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with policy_responder(rig, tmp_path, "oidc-responder") as (responder, ike, _name):
        alice, alice_browser = cli_enroll(rig, "alice", tmp_path / "alice")
        bob, _ = cli_enroll(rig, "bob", tmp_path / "bob")
        assert alice["roles"] == ["staff"] and bob["roles"] == ["contractors"]
        cp, cn = free_udp_pair()
        charon = Charon(tmp_path / "charon", cp, cn)
        certs = {who: ((tmp_path / who / "cert.pem").read_bytes(), (tmp_path / who / "key.pem").read_bytes())
                 for who in ("alice", "bob")}
        charon.write_config([Conn("alice", "alice", "alice@example.test", remote_ts="10.231.0.0/16"),
                             Conn("bob", "bob", "bob@example.test", remote_ts="10.231.0.0/16")], ike, certs,
                            {"root": (rig.dir / "root-ca.pem").read_bytes(),
                             "issuing": (tmp_path / "alice" / "chain.pem").read_bytes()})
        charon.start()
        try:
            for who, rule, expected in (("alice", "staff", ["10.231.1.0/24"]),
                                        ("bob", "contractors", ["10.231.9.0/24"])):
                _ok, log = charon.initiate(who, "net")
                # this kernel has no ESP: charon accepts the CHILD_SA, cannot install it and deletes it;
                # the IKE SA (the authentication) stays, and the responder's events show the selectors
                assert charon.sas_of(who), f"{who} could not connect:\n{log}"
                assert "TS_UNACCEPT" not in log, log
                mine = [sa for sa in responder.sas() if sa["peer_id"] == f"{who}@example.test"]
                assert len(mine) == 1 and mine[0]["rule"] == rule, mine
                assert mine[0]["serial"] == (alice if who == "alice" else bob)["serial"]
                ups = [e for e in responder.events()
                       if e["event"] == "child_sa_up" and e["peer_id"] == mine[0]["peer_id"]]
                assert ups and ups[-1]["local_ts"] == expected and ups[-1]["remote_ts"] == ["10.231.2.0/24"], ups

            def alice_up() -> bool:
                return any(sa["serial"] == alice["serial"] for sa in responder.sas())

            assert alice_up(), responder.sas()
            started = time.monotonic()
            alice_browser.log_out(rig.idp.issuer)  # alice signs out at the provider
            gone = wait_for(lambda: not alice_up(), 10)
            elapsed = time.monotonic() - started
            assert gone, f"alice's SA still up on the responder: {responder.sas()}\n{rig.idp.output[-10:]}"
            with capsys.disabled():
                print(f"\n[oidc] sign-out at the provider -> SA deleted on the bundled responder: "
                      f"{elapsed * 1000:.0f} ms")
            assert any(sa["serial"] == bob["serial"] for sa in responder.sas())  # bob is untouched
            charon.terminate("alice")
            _ok, log = charon.initiate("alice", "net", timeout_ms=6000)
            assert not charon.sas_of("alice"), f"reconnect with a held certificate succeeded:\n{log}"
            assert "AUTHENTICATION_FAILED" in log, log
            held = json.loads(rig.ikepki("certs", "show", alice["serial"], "--json").stdout)
            assert held["status"] == "hold" and held["reason"] == "certificateHold"
        finally:
            charon.stop()
