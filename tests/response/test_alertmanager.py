"""Alertmanager 0.25 (Debian) -> ikepki hooks -> hold/revoke through the core -> push -> the bundled
IKEv2 responder deletes strongSwan's IKE SA. Resolving releases the hold when the rule says so;
a storm over a rule's limit is parked as pending incidents that change nothing until a person
approves (admin API, revoker role) or rejects (CLI)."""

from __future__ import annotations

import json
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from response_lab import Lab, alertmanager_config, wait_for

from tests.conftest import run_ikepki

pytestmark = [pytest.mark.interop, pytest.mark.slow]
TAG = secrets.token_hex(3)
SOURCE = f"am-{TAG}"
MTLS_SOURCE = f"am-mtls-{TAG}"
AM_CLIENT = f"alertmanager-{TAG}"
HOLD, BYSTANDER = f"hold-{TAG}", f"bystander-{TAG}"
STORM = [f"storm{i}-{TAG}" for i in range(3)]
MEASURE = [f"m{i}-{TAG}" for i in range(20)]


def hooks(lab: Lab) -> dict[str, Any]:
    return {
        "sources": {SOURCE: {"format": "alertmanager", "bearer_token": f"file:{lab.bearer_file}"},
                    MTLS_SOURCE: {"format": "alertmanager", "client_cert_subject": f"CN={AM_CLIENT}.example.test"}},
        "rules": [
            {"name": f"edr-hold-{TAG}", "sources": [SOURCE, MTLS_SOURCE],
             "match": {"labels.alertname": "EDRDeviceCompromised"},
             "target": {"kind": "device", "field": "labels.device"}, "action": "hold", "release_on_resolve": True},
            {"name": f"storm-{TAG}", "sources": [SOURCE], "match": {"labels.alertname": "EDRStorm"},
             "target": {"kind": "device", "field": "labels.device"}, "action": "hold",
             "limit": {"max_certificates": 10, "max_devices": 1, "window_seconds": 3600}},
        ],
        "guard": {"max_certificates": 10_000, "max_devices": 1000, "window_seconds": 3600}}


@pytest.fixture(scope="module")
def am_lab(lab: Lab) -> Lab:
    lab.write_hooks(hooks(lab))
    lab.start_charon([HOLD, BYSTANDER, *STORM, *MEASURE])
    return lab


@pytest.fixture
def am(am_lab: Lab, alertmanager_factory):  # type: ignore[no-untyped-def]
    return alertmanager_factory(alertmanager_config(f"{am_lab.server.https_url}/hooks/v1/{SOURCE}",
                                                    am_lab.bearer_file, am_lab.dir / "root-ca.pem"))


def _mine(lab: Lab, device: str) -> list[dict[str, Any]]:
    return [i for i in lab.incidents(limit=1000) if i["target_value"] == device]


def test_alert_holds_device_sa_deleted_and_resolve_releases(am_lab: Lab, am) -> None:  # type: ignore[no-untyped-def]
    lab = am_lab
    dev, other = lab.devices[HOLD], lab.devices[BYSTANDER]
    assert lab.responder_has(dev) and lab.responder_has(other)
    am.amtool("alert", "add", "EDRDeviceCompromised", f"device={dev.name}", "severity=critical")
    assert wait_for(lambda: not lab.responder_has(dev), 30), (lab.responder.sas(), am.log()[-3000:])
    assert wait_for(lambda: not lab.charon.sas_of(dev.conn), 10), "charon still has the held device's SA"
    assert lab.status(dev.serial) == "hold"
    [inc] = _mine(lab, dev.name)
    assert inc["status"] == "executed" and inc["source"] == SOURCE and inc["changed"] == [dev.serial]
    assert inc["fingerprint"] and inc["alert"]["labels.severity"] == "critical"
    assert lab.responder_has(other) and lab.status(other.serial) == "valid"

    # reconnect refused while held
    ok, log = lab.charon.initiate(dev.conn, timeout_ms=6000)
    assert not ok and "AUTHENTICATION_FAILED" in log, log[-2000:]

    # the same alert resolved (endsAt in the past): the hold is released and pushed as "unrevoked"
    end = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    am.amtool("alert", "add", "EDRDeviceCompromised", f"device={dev.name}", "severity=critical", f"--end={end}")
    assert wait_for(lambda: lab.status(dev.serial) == "valid", 30), am.log()[-3000:]
    [inc] = _mine(lab, dev.name)
    assert inc["status"] == "released" and inc["resolved_at"]
    assert wait_for(lambda: any(e["event"] == "revocation_event" and e.get("type") == "unrevoked"
                                and e.get("serial") == dev.serial for e in lab.responder.events()), 20)
    ok, log = lab.charon.initiate(dev.conn)
    assert ok, log[-2000:]


def test_storm_over_the_rule_limit_is_parked_until_a_person_decides(am_lab: Lab, am) -> None:  # type: ignore[no-untyped-def]
    lab = am_lab
    for name in STORM:
        am.amtool("alert", "add", "EDRStorm", f"device={name}")
    assert wait_for(lambda: sum(len(_mine(lab, n)) for n in STORM) == 3, 30), am.log()[-3000:]
    by_status: dict[str, list[dict[str, Any]]] = {}
    for name in STORM:
        [inc] = _mine(lab, name)
        by_status.setdefault(inc["status"], []).append(inc)
    assert len(by_status.get("executed", [])) == 1 and len(by_status.get("pending", [])) == 2, by_status
    pending = by_status["pending"]
    for inc in pending:
        dev = lab.devices[inc["target_value"]]
        assert inc["guard"].startswith(f"rule storm-{TAG}") and inc["serials"] == [dev.serial]
        assert lab.status(dev.serial) == "valid" and lab.responder_has(dev)  # nothing changed
    listed = json.loads(run_ikepki("incidents", "list", "--status", "pending", "--json", directory=lab.dir).stdout)
    assert {i["id"] for i in pending} <= {i["id"] for i in listed}

    first, second = pending
    viewer, revoker = lab.token_file("viewer"), lab.token_file("revoker")
    remote = ("--server", lab.server.https_url, "--ca-bundle", str(lab.dir / "root-ca.pem"))
    listed = json.loads(run_ikepki("incidents", "list", "--status", "pending", "--json", *remote, "--token",
                                   str(viewer)).stdout)
    assert {i["id"] for i in pending} <= {i["id"] for i in listed}
    refused = run_ikepki("incidents", "approve", str(first["id"]), *remote, "--token", str(viewer), check=False)
    assert refused.returncode == 7, refused.stderr
    with lab.admin(viewer) as api:
        refused = api.post(f"/incidents/{first['id']}/approve", json={"note": "viewer tries"})
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
        assert api.get(f"/incidents/{first['id']}").json()["status"] == "pending"
    with lab.admin(revoker) as api:
        done = api.post(f"/incidents/{first['id']}/approve", json={"note": "confirmed with the EDR console"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "approved" and body["decided_by"].startswith("resp-revoker")
        again = api.post(f"/incidents/{first['id']}/approve")
        assert again.status_code == 409
    dev = lab.devices[first["target_value"]]
    assert lab.status(dev.serial) == "hold"
    assert wait_for(lambda: not lab.responder_has(dev), 20)

    proc = run_ikepki("incidents", "reject", str(second["id"]), "--note", "false positive", "--json",
                      directory=lab.dir)
    assert json.loads(proc.stdout)["status"] == "rejected"
    dev2 = lab.devices[second["target_value"]]
    assert lab.status(dev2.serial) == "valid" and lab.responder_has(dev2)
    assert run_ikepki("incidents", "approve", str(second["id"]), directory=lab.dir, check=False).returncode == 4


def test_alert_to_sa_deleted_latency(am_lab: Lab, am, capsys) -> None:  # type: ignore[no-untyped-def]
    """Figures only (no timed assertion): alert arrival at ikepki (the incident's creation) ->
    the responder's Delete of the SA (its event log), and amtool -> SA gone as a test observes it."""
    lab = am_lab
    server_side: list[float] = []
    end_to_end: list[float] = []
    for name in MEASURE:
        dev = lab.devices[name]
        assert lab.responder_has(dev)
        started = time.monotonic()
        am.amtool("alert", "add", "EDRDeviceCompromised", f"device={name}")
        assert wait_for(lambda d=dev: not lab.responder_has(d), 30, 0.005)
        end_to_end.append(time.monotonic() - started)
        [inc] = _mine(lab, name)
        down = wait_for(lambda d=dev: lab.sa_down_at(d), 10)
        assert down is not None and inc["status"] == "executed"
        server_side.append((down - datetime.fromisoformat(inc["created_at"])).total_seconds())
    server_side.sort()
    end_to_end.sort()

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] * 1000

    with capsys.disabled():
        print(f"\n[response] alert arrival -> responder SA deleted, n={len(server_side)}: "
              f"p50 {pct(server_side, 50):.0f} ms, p99 {pct(server_side, 99):.0f} ms, "
              f"mean {statistics.mean(server_side) * 1000:.0f} ms; amtool -> SA gone (incl. Alertmanager's "
              f"group_wait 1 s): p50 {pct(end_to_end, 50):.0f} ms, p99 {pct(end_to_end, 99):.0f} ms")


def test_alertmanager_authenticated_by_tls_client_certificate(am_lab: Lab, alertmanager_factory) -> None:  # type: ignore[no-untyped-def]
    """Alertmanager's other option: ``tls_config`` with a client certificate from the ikepki CA
    (no bearer token); a certificate with another subject is refused and changes nothing."""
    lab = am_lab
    cert, key, _ = lab.issue_device(AM_CLIENT)
    (lab.work / "am-client.pem").write_bytes(cert)
    (lab.work / "am-client.key").write_bytes(key)
    config = alertmanager_config(f"{lab.server.https_url}/hooks/v1/{MTLS_SOURCE}", lab.bearer_file,
                                 lab.dir / "root-ca.pem")
    http = config["receivers"][0]["webhook_configs"][0]["http_config"]
    del http["authorization"]
    http["tls_config"].update(cert_file=str(lab.work / "am-client.pem"), key_file=str(lab.work / "am-client.key"))
    am = alertmanager_factory(config)
    name = f"mtls-victim-{TAG}"
    _, _, serial = lab.issue_device(name)
    other, other_key, _ = lab.issue_device(f"not-alertmanager-{TAG}")
    (lab.work / "other.pem").write_bytes(other)
    (lab.work / "other.key").write_bytes(other_key)
    import httpx

    body = json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "EDRDeviceCompromised", "device": name}, "annotations": {},
         "startsAt": "2026-12-06T20:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "ffff"}]})
    ctx = lab.tls()
    ctx.load_cert_chain(str(lab.work / "other.pem"), str(lab.work / "other.key"))
    wrong = httpx.post(f"{lab.server.https_url}/hooks/v1/{MTLS_SOURCE}", content=body, verify=ctx,
                       headers={"content-type": "application/json"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["type"] == "urn:ikepki:hooks:unauthenticated", wrong.text
    none = httpx.post(f"{lab.server.https_url}/hooks/v1/{MTLS_SOURCE}", content=body, verify=lab.tls(),
                      headers={"content-type": "application/json"}, timeout=30)
    assert none.status_code == 401
    # the right subject from another profile (a user certificate) is refused too: profiles are pinned
    user_cert, user_key = _user_cert_with_subject(lab, f"CN={AM_CLIENT}.example.test")
    (lab.work / "user.pem").write_bytes(user_cert)
    (lab.work / "user.key").write_bytes(user_key)
    ctx = lab.tls()
    ctx.load_cert_chain(str(lab.work / "user.pem"), str(lab.work / "user.key"))
    other_profile = httpx.post(f"{lab.server.https_url}/hooks/v1/{MTLS_SOURCE}", content=body, verify=ctx,
                               headers={"content-type": "application/json"}, timeout=30)
    assert other_profile.status_code == 401, other_profile.text
    assert lab.status(serial) == "valid" and not _mine(lab, name)
    am.amtool("alert", "add", "EDRDeviceCompromised", f"device={name}")
    assert wait_for(lambda: lab.status(serial) == "hold", 30), am.log()[-3000:]
    [inc] = _mine(lab, name)
    assert inc["source"] == MTLS_SOURCE and inc["status"] == "executed"


def _user_cert_with_subject(lab: Lab, subject: str) -> tuple[bytes, bytes]:
    """A "user" profile certificate (PEM, key PEM) whose subject the operator granted."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.csr import parse_csr
    from ca.model import IssuanceRequest, Requester

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(subject))
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(f"u-{TAG}@example.test")]), critical=False)
           .sign(key, hashes.SHA256()))
    request = parse_csr(csr.public_bytes(serialization.Encoding.PEM))
    issued = lab.deployment.authority.issue(IssuanceRequest(request, "user", Requester("test", "am-pin"),
                                                            subject_grants=tuple(request.subject)))
    return (issued.certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
