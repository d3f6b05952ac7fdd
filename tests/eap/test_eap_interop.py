"""strongSwan charon (machine certificate, then user EAP: RFC 4739) against the bundled responder,
which relays EAP to FreeRADIUS 3.2.1; FreeRADIUS checks user certificates with ikepki's OCSP."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eap_lab import EapLab

pytestmark = pytest.mark.interop


def _events(lab: EapLab, event: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in lab.gw.events() if e["event"] == event and all(e.get(k) == v for k, v in match.items())]


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_machine_cert_then_eap_tls(eap_lab: EapLab) -> None:
    ok, log = eap_lab.charon.initiate("alice", "net")
    assert ok, log
    up = _events(eap_lab, "ike_sa_up", eap_identity="alice@example.test")[-1]
    assert up["eap_method"] == "tls" and up["rule"] == "staff-vpn"
    assert up["serial"] == eap_lab.creds["laptop"].serial_hex  # the machine certificate of round 1
    assert up["auth"].endswith("+EAP-TLS")
    assert up["radius"]["filter_ids"] == ["staff"] and up["radius"]["server"] == "freeradius"
    eap_ok = _events(eap_lab, "eap_success", eap_identity="alice@example.test")[-1]
    assert eap_ok["msk"] is True  # AUTH keyed with MS-MPPE-Recv-Key ‖ MS-MPPE-Send-Key
    sa = next(s for s in eap_lab.gw.sas() if s["eap_identity"] == "alice@example.test")
    assert sa["children"][0]["local_ts"] == ["10.231.1.0/24"]
    assert sa["children"][0]["remote_ts"] == ["10.231.2.0/24"]
    assert "authentication of 'gw.example.test' with EAP successful" in log or "EAP method EAP_TLS succeeded" in log
    eap_lab.charon.terminate("alice")
