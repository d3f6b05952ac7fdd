"""Revocation reaches a real strongSwan gateway over VICI: its IKE_SA is gone at once, and the
client cannot come back: the gateway checks revocation strictly (OCSP from the certificate's
AIA, reached through a port forward into its namespace) and the push flushed its OCSP/CRL
caches (and loaded the fresh CRL when it fits in a VICI message)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.swan_harness import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def ocsp_status(incident, serial: str) -> ocsp.OCSPCertStatus | None:  # type: ignore[no-untyped-def]
    """What the server's OCSP responder says now (the gateway asks the same responder)."""
    dep = incident.deployment
    info = dep.store.get(int(serial, 16))
    req = ocsp.OCSPRequestBuilder().add_certificate(info.certificate(), dep.issuers[info.issuer_id].certificate,
                                                    hashes.SHA1()).build()
    resp = httpx.post(f"{incident.server.http_url}/ocsp", content=req.public_bytes(serialization.Encoding.DER),
                      headers={"content-type": "application/ocsp-request"}, timeout=5)
    parsed = ocsp.load_der_ocsp_response(resp.content)
    return parsed.certificate_status if parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL else None


def test_revoke_yes_terminates_the_strongswan_sa_and_reconnect_fails(incident, swan_rig, capsys):  # type: ignore[no-untyped-def]
    rig = swan_rig
    ok, log = rig.client.initiate("vpn")
    assert ok, f"client could not connect:\n{log}\n--- gateway ---\n{rig.gateway.log()[-3000:]}"
    assert wait_until(lambda: rig.gateway.established(rig.client_id), 5), rig.gateway.ike_sas()

    with incident.api() as api:
        health = api.get(f"/gateways/{rig.gateway_name}/health").json()
        assert health["reachable"] is True and health["live_peers"] >= 1, health
        plan = api.post("/revocations", json={"serials": [rig.client_serial], "reason": "keyCompromise",
                                              "dry_run": True}).json()
        assert plan["live_sas"] == {rig.client_serial: [rig.gateway_name]}, plan  # the dry run knows where it is

    gone_at: list[float] = []
    gone_wall: list[float] = []

    def watch() -> None:
        while not gone_at:
            if not rig.gateway.established(rig.client_id):
                gone_at.append(time.monotonic())
                gone_wall.append(time.time())
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.monotonic()
    watcher.start()
    proc = incident.ikepki("revoke", rig.client_serial, "--reason", "keyCompromise", "--yes", "--json")
    watcher.join(15)
    assert gone_at, f"gateway SA still up after revoke:\n{proc.stdout}\n{rig.gateway.log()[-3000:]}"
    result = json.loads(proc.stdout)
    assert result["revoked"] == [rig.client_serial]
    push = {p["gateway"]: p for p in result["push"]}
    assert push[rig.gateway_name]["delivered"] == 1, push
    committed = datetime.fromisoformat(result["targets"][0]["revoked_at"]).timestamp()
    with capsys.disabled():
        print(f"\n[incident] ikepki revoke --yes -> strongSwan SA deleted: {(gone_at[0] - started) * 1000:.0f} ms "
              f"(of which revocation commit -> SA deleted: {(gone_wall[0] - committed) * 1000:.0f} ms; "
              f"the rest is CLI start-up)")

    assert wait_until(lambda: not rig.client.established(), 5), "client still has the IKE_SA (no Delete seen)"
    assert wait_until(lambda: ocsp_status(incident, rig.client_serial) == ocsp.OCSPCertStatus.REVOKED, 10, 0.2)
    ok, log = rig.client.initiate("vpn", timeout_ms=6000)
    assert not ok, f"reconnect with a revoked certificate succeeded:\n{log}"
    assert "AUTH_FAILED" in log or "AUTH_FAILED" in rig.client.log(), log
    assert "revoked" in rig.gateway.log(), rig.gateway.log()[-3000:]  # the gateway's own OCSP check
    assert incident.cert_status(rig.client_serial) == "revoked"
