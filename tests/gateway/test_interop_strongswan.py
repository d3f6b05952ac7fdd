"""strongSwan charon (initiator) against the ikepki responder: the interop proof.

Every test drives the real charon over VICI and checks both sides: charon's view (VICI
list-sas, its log of the exchange) and the responder's (``sas``, JSON event log).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from gw_lab import Lab
from gw_pki import make_leaf, make_root

from ca.revocation_event import PUSH_SIGNER_EKU, RevocationEvent, now_rfc3339, sign_event
from gateway.certs import key_id
from tests.swan_harness import wait_until

pytestmark = [pytest.mark.interop]


def connect(lab: Lab, conn: str, child: str | None = None) -> tuple[bool, str]:
    """Initiate ``conn`` on a fresh IKE SA (charon would otherwise reuse an existing one)."""
    if lab.charon.sas_of(conn):
        lab.charon.terminate(conn)
    return lab.charon.initiate(conn, child)


def responder_sa(lab: Lab, peer_id: str, proc=None) -> list[dict]:
    return [sa for sa in (proc or lab.main).sas() if sa["peer_id"] == peer_id and sa["state"] == "established"]


def test_childless_ike_sa_is_up_on_both_sides(lab: Lab) -> None:
    ok, log = connect(lab, "alice")
    assert ok, log
    assert "CHILDLESS_IKEV2_SUPPORTED" in log
    charon_sas = lab.charon.sas_of("alice")
    assert charon_sas and charon_sas[-1]["state"] == b"ESTABLISHED"
    spi_i = charon_sas[-1]["initiator-spi"].decode()
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "sas", "--json", "--control", str(lab.main.control)],
                         capture_output=True, text=True, check=True, timeout=20)
    mine = [sa for sa in json.loads(out.stdout)["sas"] if sa["ike_sa"].startswith(spi_i)]
    assert len(mine) == 1 and mine[0]["state"] == "established"
    assert mine[0]["peer_id"] == "alice@example.test" and mine[0]["rule"] == "staff"
    assert mine[0]["serial"] == lab.pki.clients["alice"].serial_hex and mine[0]["children"] == []
    up = [e for e in lab.main.events() if e["event"] == "ike_sa_up" and e["ike_sa"] == mine[0]["ike_sa"]]
    assert up and up[0]["serial"] == lab.pki.clients["alice"].serial_hex
    text = subprocess.run([sys.executable, "-m", "gateway.cli", "sas", "--url", lab.main.url],
                          capture_output=True, text=True, check=True, timeout=20).stdout
    assert "alice@example.test" in text


def test_child_sa_is_negotiated_with_policy_narrowing(lab: Lab) -> None:
    _ok, log = connect(lab, "carol", "net")
    # This kernel has no ESP: charon accepts our CHILD_SA, fails to install it and deletes it.
    assert "selected proposal: ESP:AES_GCM_16_256/NO_EXT_SEQ" in log, log
    assert "unable to install" in log and "TS_UNACCEPT" not in log
    assert lab.charon.sas_of("carol"), "the IKE SA survives the child"
    ups = [e for e in lab.main.events() if e["event"] == "child_sa_up" and e["peer_id"] == "carol@example.test"]
    assert ups and ups[-1]["remote_ts"] == ["10.231.2.0/25"] and ups[-1]["local_ts"] == ["10.231.1.0/24"]
    assert wait_until(lambda: any(e["event"] == "child_sa_down" and e["spi_in"] == ups[-1]["spi_in"]
                                  for e in lab.main.events()))


def test_policy_without_matching_selectors_answers_ts_unacceptable(lab: Lab) -> None:
    ok, log = connect(lab, "bob", "net")
    assert not ok and "received TS_UNACCEPTABLE notify" in log, log
    assert lab.charon.sas_of("bob") and responder_sa(lab, "bob@example.test")[0]["children"] == []


def test_no_policy_file_grants_ike_sa_but_no_child(lab: Lab) -> None:
    ok, log = connect(lab, "alice-nopol", "net")
    assert not ok and "received TS_UNACCEPTABLE notify" in log, log
    assert responder_sa(lab, "alice@example.test", lab.nopolicy)


@pytest.mark.parametrize(("conn", "reason"), [
    ("mallory", "does not chain to a trusted root"),
    ("olga", "expired"),
    ("walt", "EKU"),
    ("wrongid", "identity does not match"),
    ("rita", "OCSP: certificate revoked"),
])
def test_bad_certificates_are_refused_with_authentication_failed(lab: Lab, conn: str, reason: str) -> None:
    ok, log = connect(lab, conn)
    assert not ok
    assert "received AUTHENTICATION_FAILED notify error" in log, log
    fails = [e for e in lab.main.events() if e["event"] == "auth_failed" and reason in e["reason"]]
    assert fails, lab.main.events()[-3:]
    assert not lab.charon.sas_of(conn)


def test_legacy_proposal_is_refused_with_no_proposal_chosen(lab: Lab) -> None:
    ok, log = connect(lab, "legacy")
    assert not ok and "received NO_PROPOSAL_CHOSEN notify error" in log, log
    assert any(e["event"] == "proposal_refused" for e in lab.main.events())


def test_invalid_ke_retry_when_initiator_guesses_x25519(lab: Lab) -> None:
    mark = len(lab.charon.log())
    ok, log = connect(lab, "x25519first")
    assert ok, log
    assert "peer didn't accept DH group CURVE_25519, it requested ECP_256" in lab.charon.log()[mark:]
    assert responder_sa(lab, "erin@example.test")[-1]["suite"].endswith("ECP_256")


def test_invalid_ke_retry_when_responder_prefers_x25519(lab: Lab) -> None:
    mark = len(lab.charon.log())
    ok, log = connect(lab, "ecpfirst-nopol")
    assert ok, log
    assert "peer didn't accept DH group ECP_256, it requested CURVE_25519" in lab.charon.log()[mark:]
    assert responder_sa(lab, "alice@example.test", lab.nopolicy)[-1]["suite"].endswith("CURVE_25519")


@pytest.mark.parametrize(("conn", "suite"), [
    ("dave", "AES_GCM_16_256/HMAC_SHA2_256/ECP_256"),      # Ed25519 certificate, RFC 8420 / 7427
    ("erin", "CHACHA20_POLY1305_256/HMAC_SHA2_384/ECP_384"),  # P-384, ChaCha20-Poly1305
    ("frank", "AES_GCM_16_128/HMAC_SHA2_512/ECP_521"),     # RSA certificate
])
def test_other_key_types_and_suites(lab: Lab, conn: str, suite: str) -> None:
    ok, log = connect(lab, conn)
    assert ok, log
    ident = "dave.example.test" if conn == "dave" else f"{conn}@example.test"
    sas = responder_sa(lab, ident)
    assert sas and sas[-1]["suite"] == suite


@pytest.mark.parametrize(("conn", "peer_id", "id_type"), [
    ("alice", "alice@example.test", "RFC822_ADDR"),
    ("dave", "dave.example.test", "FQDN"),
    ("alice-dn", "CN=alice,OU=staff,O=ikepki test", "DER_ASN1_DN"),
    ("ivan", "127.0.0.1", "IPV4_ADDR"),
])
def test_id_types_bind_to_certificate(lab: Lab, conn: str, peer_id: str, id_type: str) -> None:
    ok, log = connect(lab, conn)
    assert ok, log
    ups = [e for e in lab.main.events() if e["event"] == "ike_sa_up" and peer_id in e["peer_id"]]
    assert ups and ups[-1]["id_type"] == id_type


@pytest.mark.parametrize(("charon", "conn", "scheme", "ours"), [
    ("classic", "alice-classic", "ECDSA_256", "ECDSA-256 signature"),
    ("classic", "erin-classic", "ECDSA_384", "ECDSA-256 signature"),  # our key is P-256 whatever the peer's
    ("classic", "gina-classic", "ECDSA_521", "ECDSA-256 signature"),
    ("charon", "alice", "DIGITAL_SIGNATURE/ecdsa-sha256", "ECDSA_WITH_SHA256_DER"),
    ("charon", "erin", "DIGITAL_SIGNATURE/ecdsa-sha384", "ECDSA_WITH_SHA256_DER"),
    ("charon", "dave", "DIGITAL_SIGNATURE/ed25519", "ECDSA_WITH_SHA256_DER"),
    ("charon", "frank", "DIGITAL_SIGNATURE/rsassa_pkcs1v15-sha256", "ECDSA_WITH_SHA256_DER"),
    ("charon", "frank-pss", "DIGITAL_SIGNATURE/rsassa_pss-sha256", "ECDSA_WITH_SHA256_DER"),
])
def test_auth_methods(lab: Lab, charon: str, conn: str, scheme: str, ours: str) -> None:
    """RFC 7427 method 14 (ECDSA, Ed25519, RSA PKCS#1/PSS) and RFC 4754 methods 9/10/11, both ways."""
    ch = lab.classic if charon == "classic" else lab.charon
    if ch.sas_of(conn):
        ch.terminate(conn)
    ok, log = ch.initiate(conn)
    assert ok, log
    assert f"authentication of 'gw.example.test' with {ours} successful" in log
    spi = ch.sas_of(conn)[-1]["initiator-spi"].decode()
    (mine,) = [sa for sa in lab.main.sas() if sa["ike_sa"].startswith(spi)]
    assert mine["auth"] == scheme


def test_rfc7383_fragmentation_both_ways(lab: Lab) -> None:
    """charon (fragment_size 500) fragments IKE_AUTH; the responder (--fragment-size 500) too."""
    mark = len(lab.classic.log())
    ok, log = lab.classic.initiate("alice-frag")
    assert ok, log
    new = lab.classic.log()[mark:]
    assert "splitting IKE message" in new, "charon sent IKE_AUTH in fragments"
    assert "reassembled fragmented IKE message" in new, "charon reassembled our fragments"


def test_mobike_port_float_and_requests_follow_the_peer(lab: Lab) -> None:
    """mobike = yes: charon moves to its NAT-T port for IKE_AUTH (note §4); our answers and our
    own requests follow it, and MOBIKE_SUPPORTED is answered (RFC 4555 §3.3)."""
    ok, log = connect(lab, "alice-mobike")
    assert ok, log
    assert "N(MOBIKE_SUP)" in log.split("parsed IKE_AUTH response")[1].splitlines()[0]
    spi = lab.charon.sas_of("alice-mobike")[-1]["initiator-spi"].decode()
    (mine,) = [sa for sa in lab.main.sas() if sa["ike_sa"].startswith(spi)]
    assert mine["peer"] == f"127.0.0.1:{lab.charon.nat_port}" and not mine["peer_behind_nat"]
    lab.charon.terminate("alice-mobike")
    assert wait_until(lambda: not [sa for sa in lab.main.sas() if sa["ike_sa"].startswith(spi)])


def test_cookie_round_trip_under_load_threshold(lab: Lab) -> None:
    ok, log = connect(lab, "alice-cookie")
    assert ok, log
    assert "received COOKIE notify" in log


def _event(lab: Lab, serial_hex: str, key: Any = None, chain: list[x509.Certificate] | None = None) -> str:
    ev = RevocationEvent(event_id=str(uuid.uuid4()), type="revoked", issuer=lab.pki.root.cert.subject.rfc4514_string(),
                         issuer_key_id=key_id(lab.pki.root.cert), serial=serial_hex, reason="keyCompromise",
                         revoked_at=now_rfc3339(), identities=["email:carol@example.test"], created_at=now_rfc3339())
    signer = key or lab.pki.push_signer.key
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    return sign_event(ev, signer, chain or [lab.pki.push_signer.cert])


def test_pushed_revocation_deletes_sa_and_refuses_reconnect(lab: Lab) -> None:
    ok, log = connect(lab, "carol")
    assert ok, log
    assert responder_sa(lab, "carol@example.test")
    token = _event(lab, lab.pki.clients["carol"].serial_hex)
    r = httpx.post(lab.main.url + "/v1/revocations", content=token,
                   headers={"Content-Type": "application/jose"}, timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] is True
    assert r.json()["terminated_sas"] >= 1
    assert wait_until(lambda: not lab.charon.sas_of("carol")), "charon still has carol's SA"
    assert "received DELETE for IKE_SA" in lab.charon.log()
    assert not responder_sa(lab, "carol@example.test")
    ok, log = connect(lab, "carol")
    assert not ok and "received AUTHENTICATION_FAILED notify error" in log, log
    assert any(e["event"] == "auth_failed" and "revoked" in e["reason"] for e in lab.main.events())
    again = httpx.post(lab.main.url + "/v1/revocations", content=token, timeout=10)
    assert again.status_code == 200 and again.json() == {"accepted": True, "terminated_sas": 0, "duplicate": True}


def test_bad_push_events_are_rejected(lab: Lab) -> None:
    url = lab.main.url + "/v1/revocations"
    assert httpx.post(url, content=b"not-a-jws", timeout=10).status_code == 400
    alice = lab.pki.clients["alice"]
    assert httpx.post(url, content=_event(lab, "1234", alice.key, [alice.cert]), timeout=10).status_code == 401
    foreign_signer = make_leaf(make_root("evil root"), "evil push", ekus=(PUSH_SIGNER_EKU,))
    r = httpx.post(url, content=_event(lab, "1234", foreign_signer.key, [foreign_signer.cert]), timeout=10)
    assert r.status_code == 401 and r.json()["accepted"] is False
    assert httpx.get(url, timeout=10).status_code == 405
    assert responder_sa(lab, "alice@example.test"), "nothing was deleted"


def test_ike_rekey_dpd_and_delete(lab: Lab) -> None:
    ok, log = connect(lab, "dave")
    assert ok, log
    before = {sa["ike_sa"] for sa in responder_sa(lab, "dave.example.test")}
    name = lab.charon.sas_of("dave")[-1]
    lab.charon.rekey("dave")
    assert wait_until(lambda: any(e["event"] == "ike_sa_rekey" for e in lab.main.events()))
    assert wait_until(lambda: {sa["ike_sa"] for sa in responder_sa(lab, "dave.example.test")}.isdisjoint(before))
    after = lab.charon.sas_of("dave")
    assert after and after[-1]["state"] == b"ESTABLISHED"
    assert after[-1]["initiator-spi"] != name["initiator-spi"]
    new = responder_sa(lab, "dave.example.test")[-1]
    assert new["ike_sa"].startswith(after[-1]["initiator-spi"].decode())
    # DPD (dpd_delay = 1s): empty INFORMATIONALs on the new SA are answered; charon keeps the SA.
    first = new["next_msgid"]
    assert wait_until(lambda: responder_sa(lab, "dave.example.test")[-1]["next_msgid"] >= first + 2, 6)
    assert lab.charon.sas_of("dave")[-1]["state"] == b"ESTABLISHED"
    lab.charon.terminate("dave")
    assert wait_until(lambda: not responder_sa(lab, "dave.example.test"))
    downs = [e for e in lab.main.events() if e["event"] == "ike_sa_down" and e.get("reason") == "deleted by peer"]
    assert downs
