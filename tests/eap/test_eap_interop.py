"""strongSwan charon (machine certificate, then user EAP: RFC 4739) against the bundled responder,
which relays EAP to FreeRADIUS 3.2.1; FreeRADIUS checks user certificates with ikepki's OCSP.

charon cannot install ESP in this kernel (see the strongSwan note §2): it negotiates the CHILD_SA,
then deletes it; the responder's child_sa_up event still records the narrowed selectors."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from eap_lab import EapLab
from radius_lab import totp

from tests.eap.conftest import DAE_SECRET, SESSION_TIMEOUT

pytestmark = pytest.mark.interop


def _events(lab: EapLab, event: str, proc: Any = None, **match: Any) -> list[dict[str, Any]]:
    return [e for e in (proc or lab.gw).events() if e["event"] == event
            and all(e.get(k) == v for k, v in match.items())]


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _connect(lab: EapLab, conn: str, child: str | None = "net") -> tuple[bool, str]:
    if lab.charon.sas_of(conn):
        lab.charon.terminate(conn)
    ok, log = lab.charon.initiate(conn, child)
    return ("established between" in log and f"IKE_SA {conn}[" in log) if child else ok, log


def test_machine_cert_then_eap_tls_gets_staff_selectors(eap_lab: EapLab) -> None:
    mark = len(eap_lab.gw.events())
    ok, log = _connect(eap_lab, "alice")
    assert ok, log
    assert "EAP method EAP_TLS succeeded, MSK established" in log
    assert "authentication of 'gw.example.test' with EAP successful" in log  # our MSK-keyed AUTH verified
    new = eap_lab.gw.events()[mark:]
    up = next(e for e in new if e["event"] == "ike_sa_up")
    assert up["eap_identity"] == "alice@example.test" and up["eap_method"] == "tls" and up["rule"] == "staff-vpn"
    assert up["serial"] == eap_lab.creds["laptop"].serial_hex  # the machine certificate of round 1
    assert up["auth"].endswith("+EAP-TLS")
    assert up["radius"]["filter_ids"] == ["staff"] and up["radius"]["classes"] == ["staff"]
    assert up["radius"]["server"] == "freeradius"  # after failing over from the dead primary
    assert next(e for e in new if e["event"] == "eap_success")["msk"] is True
    child = next(e for e in new if e["event"] == "child_sa_up")
    assert child["local_ts"] == ["10.231.1.0/24"] and child["remote_ts"] == ["10.231.2.0/24"]
    assert "ocsp: Cert status: good" in eap_lab.radius.log()


def test_two_users_two_selector_sets_and_virtual_ip(eap_lab: EapLab) -> None:
    """bob's Access-Accept says Filter-Id guests + Framed-IP-Address: another rule, his virtual IP."""
    mark = len(eap_lab.gw.events())
    ok, log = _connect(eap_lab, "bob")
    assert ok, log
    assert "installing new virtual IP 10.231.9.7" in log  # CP(CFG_REPLY) INTERNAL_IP4_ADDRESS accepted
    new = eap_lab.gw.events()[mark:]
    up = next(e for e in new if e["event"] == "ike_sa_up")
    assert up["rule"] == "guests" and up["virtual_ip"] == "10.231.9.7"
    child = next(e for e in new if e["event"] == "child_sa_up")
    assert child["remote_ts"] == ["10.231.9.7/32"]
    assert child["local_ts"] == ["10.231.9.0/24[6/443-443]"]


def test_policy_requires_both_rounds(eap_lab: EapLab) -> None:
    """alice without the machine certificate: EAP-TLS succeeds, but staff-vpn requires pubkey+eap."""
    ok, log = _connect(eap_lab, "alice-eaponly", child=None)
    assert not ok
    assert "AUTHENTICATION_FAILED" in log
    fail = _events(eap_lab, "auth_failed", eap_identity="alice@example.test")[-1]
    assert fail["reason"] == "no policy rule matches"
    ok, log = _connect(eap_lab, "bob-eaponly")  # the guests rule requires eap only
    assert ok, log


def test_eap_gtc_with_totp(eap_lab: EapLab) -> None:
    """Second factor: EAP-GTC answered with an RFC 6238 code, checked by FreeRADIUS rlm_totp; no MSK,
    so both AUTH payloads are keyed with SK_pi/SK_pr (RFC 7296 §2.16)."""
    s = eap_lab.charon.session()
    s.load_shared({"type": "EAP", "data": totp(eap_lab.radius.totp_secret), "owners": ["carl"]})
    mark = len(eap_lab.gw.events())
    ok, log = _connect(eap_lab, "carl")
    assert ok, log
    new = eap_lab.gw.events()[mark:]
    assert next(e for e in new if e["event"] == "eap_success")["msk"] is False
    up = next(e for e in new if e["event"] == "ike_sa_up")
    assert up["eap_method"] == "gtc" and up["rule"] == "staff-vpn"


def test_wrong_totp_refused(eap_lab: EapLab) -> None:
    code = totp(eap_lab.radius.totp_secret)
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    eap_lab.charon.session().load_shared({"type": "EAP", "data": wrong, "owners": ["carl"]})
    ok, log = _connect(eap_lab, "carl", child=None)
    assert not ok and "AUTHENTICATION_FAILED" in log
    fail = _events(eap_lab, "auth_failed", eap_identity="carl")[-1]
    assert "Access-Reject" in fail["reason"]
    assert "[totp] = fail" in eap_lab.radius.log()


def test_revoked_user_certificate_refused_by_freeradius_ocsp(eap_lab: EapLab) -> None:
    eap_lab.pki.revoke(eap_lab.creds["rita"].serial_hex)
    ok, log = _connect(eap_lab, "rita", child=None)
    assert not ok
    assert "AUTHENTICATION_FAILED" in log
    assert "ocsp: Cert status: revoked" in eap_lab.radius.log()
    fail = _events(eap_lab, "auth_failed", eap_identity="rita@example.test")[-1]
    assert "Access-Reject" in fail["reason"]
    assert not [s for s in eap_lab.gw.sas() if s.get("eap_identity") == "rita@example.test"]


def test_wrong_radius_secret_refused_without_hanging(eap_lab: EapLab) -> None:
    started = time.monotonic()
    ok, log = _connect(eap_lab, "alice-bad", child=None)
    assert not ok and "AUTHENTICATION_FAILED" in log
    assert time.monotonic() - started < 30  # 2 servers x (1 + 1 retry) x 1 s, then AUTH_FAILED
    fail = _events(eap_lab, "auth_failed", proc=eap_lab.badsecret)[-1]
    assert "RADIUS" in fail["reason"] and "no valid answer" in fail["reason"]
    assert "invalid Message-Authenticator" in eap_lab.radius.log()  # FreeRADIUS dropped our requests
    assert eap_lab.badsecret.control_get("/healthz") == {"ok": True}


def test_accounting_start_interim_stop(eap_lab: EapLab) -> None:
    ok, log = _connect(eap_lab, "alice")
    assert ok, log
    sa = next(s for s in eap_lab.gw.sas() if s.get("eap_identity") == "alice@example.test")
    session = sa["ike_sa"].replace("_i:", "-").replace("_r", "")
    _wait(lambda: any(line.startswith("Interim-Update alice@example.test " + session)
                      for line in eap_lab.radius.accounting()), 10, "Interim-Update (Acct-Interim-Interval 2)")
    eap_lab.charon.terminate("alice")
    stop = _wait(lambda: [ln for ln in eap_lab.radius.accounting()
                          if ln.startswith(f"Stop alice@example.test {session}")], 10, "accounting Stop")
    assert stop[0].endswith("User-Request")
    assert any(ln.startswith(f"Start alice@example.test {session}") for ln in eap_lab.radius.accounting())


def _radclient(lab: EapLab, code: str, attrs: str, secret: str = DAE_SECRET) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["radclient", "-x", "-r", "1", "-t", "2", f"127.0.0.1:{lab.dae_port}", code, secret],
                          input=attrs, capture_output=True, text=True, timeout=20, check=False)


def test_disconnect_request_deletes_the_sa(eap_lab: EapLab) -> None:
    ok, log = _connect(eap_lab, "alice")
    assert ok, log
    sa = next(s for s in eap_lab.gw.sas() if s.get("eap_identity") == "alice@example.test")
    # wrong DAE secret: silently discarded (no answer), the SA stays
    bad = _radclient(eap_lab, "disconnect", 'User-Name = "alice@example.test"\nMessage-Authenticator = 0x00\n',
                     secret="wrong")
    assert "Received Disconnect-ACK" not in bad.stdout and "Received Disconnect-NAK" not in bad.stdout
    assert any(s["ike_sa"] == sa["ike_sa"] for s in eap_lab.gw.sas())
    # RFC 5176 §6.3: no Event-Timestamp, or a stale one: silently discarded too, the SA stays
    for ts in ("", f"Event-Timestamp = {int(time.time()) - 3600}\n"):
        stale = _radclient(eap_lab, "disconnect",
                           f'User-Name = "alice@example.test"\n{ts}Message-Authenticator = 0x00\n')
        assert "Received Disconnect-ACK" not in stale.stdout and "Received Disconnect-NAK" not in stale.stdout
        assert any(s["ike_sa"] == sa["ike_sa"] for s in eap_lab.gw.sas())
    now = f"Event-Timestamp = {int(time.time())}\n"
    # unknown session: NAK, Error-Cause 503
    nak = _radclient(eap_lab, "disconnect", f'User-Name = "nobody@example.test"\n{now}Message-Authenticator = 0x00\n')
    assert "Received Disconnect-NAK" in nak.stdout and "Session-Context-Not-Found" in nak.stdout
    ack = _radclient(eap_lab, "disconnect", f'User-Name = "alice@example.test"\n{now}Message-Authenticator = 0x00\n')
    assert "Received Disconnect-ACK" in ack.stdout, ack.stdout + ack.stderr
    _wait(lambda: not any(s["ike_sa"] == sa["ike_sa"] for s in eap_lab.gw.sas()), 10, "SA deleted")
    _wait(lambda: not eap_lab.charon.sas_of("alice"), 10, "charon saw the Delete")
    down = _events(eap_lab, "ike_sa_down", ike_sa=sa["ike_sa"])
    assert down and down[-1]["reason"] == "radius disconnect"
    session = sa["ike_sa"].replace("_i:", "-").replace("_r", "")
    _wait(lambda: [ln for ln in eap_lab.radius.accounting()
                   if ln.startswith(f"Stop alice@example.test {session}") and ln.endswith("Admin-Reset")],
          10, "accounting Stop with Admin-Reset")


def test_session_timeout_sends_auth_lifetime(eap_lab: EapLab) -> None:
    """dora's Access-Accept carries Session-Timeout: the responder sends AUTH_LIFETIME (RFC 4478) and
    charon starts re-authenticating at once (childless here; the full re-authentication with a
    CHILD_SA is in test_eap_reauth_libipsec)."""
    ok, log = _connect(eap_lab, "dora", child=None)
    assert ok, log
    assert f"received AUTH_LIFETIME of {SESSION_TIMEOUT}s" in log
    up = _events(eap_lab, "ike_sa_up", eap_identity="dora@example.test")[-1]
    assert up["auth_lifetime"] == SESSION_TIMEOUT and up["radius"]["session_timeout"] == SESSION_TIMEOUT
    _wait(lambda: "reauthenticating IKE_SA dora[" in eap_lab.charon.log(), 10, "charon re-authenticating")
