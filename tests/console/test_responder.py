"""The console with automated response and the bundled IKEv2 responder (the response lab: strongSwan
charon holds one IKE SA per device against ``python -m gateway.cli serve``, registered as a push
gateway): pending incidents parked by a rule's limit are listed, and revoking a device from the
console with preview and confirmation makes the responder delete that device's SA only."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from response_lab import Lab, lab, wait_for  # noqa: F401  (the lab fixture is re-used here)

from tests.console.conftest import Browser, chromium

pytestmark = [pytest.mark.interop, pytest.mark.slow]
TAG = secrets.token_hex(3)
SOURCE = f"console-am-{TAG}"
TARGET, BYSTANDER = f"console-target-{TAG}", f"console-bystander-{TAG}"
STORM = [f"console-storm{i}-{TAG}" for i in range(2)]


@pytest.fixture(scope="module")
def console_lab(lab: Lab) -> Lab:  # noqa: F811
    lab.write_hooks({
        "sources": {SOURCE: {"format": "alertmanager", "bearer_token": f"file:{lab.bearer_file}"}},
        "rules": [{"name": f"storm-{TAG}", "sources": [SOURCE], "match": {"labels.alertname": "Storm"},
                   "target": {"kind": "device", "field": "labels.device"}, "action": "hold",
                   "limit": {"max_certificates": 10, "max_devices": 1, "window_seconds": 3600}}],
        "guard": {"max_certificates": 10_000, "max_devices": 1000, "window_seconds": 3600}})
    lab.start_charon([TARGET, BYSTANDER, *STORM])
    return lab


@pytest.fixture
def lab_browser(console_lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    with chromium(console_lab.server.https_port, tmp_path, request) as b:
        yield b


def alert(device: str) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "receiver": "ikepki", "groupKey": device,
                       "alerts": [{"status": "firing", "labels": {"alertname": "Storm", "device": device},
                                   "annotations": {"summary": f"<b>{device}</b>"},
                                   "startsAt": "2026-12-06T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                                   "fingerprint": secrets.token_hex(8)}]}).encode()


def pending_of(rig: Lab, device: str) -> list[dict[str, Any]]:
    return [i for i in rig.incidents(status="pending", limit=1000) if i["target_value"] == device]


def test_pending_incidents_listed_and_device_revocation_deletes_its_responder_sa(console_lab, lab_browser):  # type: ignore[no-untyped-def]
    rig, b = console_lab, lab_browser
    bearer = rig.bearer_file.read_text().strip()
    for device in STORM:  # the rule allows one device an hour: the second is parked
        resp = rig.post_hook(SOURCE, alert(device), {"authorization": f"Bearer {bearer}"})
        assert resp.status_code in (200, 202), resp.text
    assert wait_for(lambda: pending_of(rig, STORM[1]), 20), rig.incidents(limit=50)
    [parked] = pending_of(rig, STORM[1])

    b.sign_in(rig.token_file("revoker").read_text().strip())
    b.get("/console/incidents")
    row = next((r for r in b.find_all("#incidents-response tbody tr") if r.text.startswith(f"{parked['id']} ")), None)
    assert row is not None, b.page_text()
    assert f"device: {STORM[1]}" in row.text and f"storm-{TAG}" in row.text and "hold" in row.text

    target, bystander = rig.devices[TARGET], rig.devices[BYSTANDER]
    assert rig.responder_has(target) and rig.responder_has(bystander)
    b.get(f"/console/device?id={TARGET}")
    b.click("a[href*='/console/revoke?device=']")
    assert b.find("#device_id").get_attribute("value") == TARGET
    b.click("#preview")
    assert b.text("#target-count") == "1"
    assert b.text("#live-count") == "1", b.page_text()  # the responder reports the device's SA
    [tr] = b.find_all("#targets tbody tr")
    assert target.serial in tr.text and tr.find_element("css selector", "td.live").text == rig.gateway
    b.find("#confirm_count").send_keys("1")
    b.click("#confirm")
    assert wait_for(lambda: not rig.responder_has(target), 20), rig.responder.sas()
    assert wait_for(lambda: not rig.charon.sas_of(target.conn), 10), "charon still has the revoked device's SA"
    assert rig.status(target.serial) == "revoked"
    assert rig.responder_has(bystander) and rig.status(bystander.serial) == "valid"
    assert wait_for(lambda: b.find_all("#all-delivered"), 20, 0.3), b.page_text()
    assert b.find(f"#deliveries tr[data-gateway='{rig.gateway}'] td.delivered").text == "1"
    # the parked incident is still pending: the console's revocation did not touch it
    assert pending_of(rig, STORM[1])
    parked_dev = rig.devices[STORM[1]]
    assert rig.responder_has(parked_dev) and rig.status(parked_dev.serial) == "valid"

    # a viewer sees the incident but no decision; a revoker approves it: the parked hold runs now
    viewer = rig.token_file("viewer").read_text().strip()
    b.click("#logout")
    b.sign_in(viewer)
    b.get("/console/incidents")
    assert str(parked["id"]) in b.text("#incidents-response") and not b.find_all("form.decide")
    b.click("#logout")
    b.sign_in(rig.token_file("revoker").read_text().strip())
    b.get("/console/incidents")
    form = next(f for f in b.find_all("form.decide")
                if f.get_attribute("action").endswith(f"/console/incidents/response/{parked['id']}"))
    form.find_element("css selector", "input[name=note]").send_keys("confirmed <b>by</b> phone")
    old = b.driver.find_element("tag name", "html")
    form.find_element("css selector", "button.approve").click()
    b.wait_replaced(old)
    assert not pending_of(rig, STORM[1])
    [decided] = [i for i in rig.incidents(limit=1000) if i["id"] == parked["id"]]
    assert decided["status"] == "approved" and decided["note"] == "confirmed <b>by</b> phone"
    assert decided["decided_by"].startswith("resp-revoker")
    assert rig.status(parked_dev.serial) == "hold"
    assert wait_for(lambda: not rig.responder_has(parked_dev), 20), rig.responder.sas()
