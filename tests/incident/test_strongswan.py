"""Revocation reaches a real strongSwan gateway over VICI: its IKE_SA is gone and the client
cannot come back (IKE_AUTH fails on the pushed CRL)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import pytest

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def wait_for(predicate, timeout: float, step: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def test_revoke_yes_terminates_the_strongswan_sa_and_reconnect_fails(incident, swan_rig, capsys):  # type: ignore[no-untyped-def]
    rig = swan_rig
    ok, log = rig.client.initiate("vpn")
    assert ok, f"client could not connect:\n{log}\n--- gateway ---\n{rig.gateway.log()[-3000:]}"
    assert wait_for(lambda: rig.gateway.established(rig.client_id), 5), rig.gateway.ike_sas()

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

    assert wait_for(lambda: not rig.client.established(), 5), "client still has the IKE_SA (no Delete seen)"
    ok, log = rig.client.initiate("vpn", timeout_ms=6000)
    assert not ok, f"reconnect with a revoked certificate succeeded:\n{log}"
    assert "AUTH_FAILED" in log or "AUTH_FAILED" in rig.client.log(), log
    assert "revoked" in rig.gateway.log(), rig.gateway.log()[-3000:]
    assert incident.cert_status(rig.client_serial) == "revoked"
