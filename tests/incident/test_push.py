"""Push delivery survives a gateway outage and a server crash (at-least-once, nothing lost)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from typer.testing import CliRunner

from ca.revocation_event import MEDIA_TYPE, verify_event
from ocsp.push.cli import gateways_app


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def _row(incident, serial: str, gateway: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return next(r for r in incident.deliveries(serial) if r["gateway"] == gateway)


def _setup(incident, receiver, what: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    tag = os.urandom(3).hex()
    name = f"hook-{what}-{tag}"
    incident.add_gateway(name, "webhook", receiver.url)
    _, _, serial = incident.issue("user", x509.RFC822Name(f"{what}-{tag}@example.test"), f"{what}-{tag}")
    return name, serial


def _events(incident, receiver, serial: str) -> list[Any]:  # type: ignore[no-untyped-def]
    roots = x509.load_pem_x509_certificates((incident.dir / "root-ca.pem").read_bytes())
    events = [verify_event(r.body, roots) for r in receiver.received]
    assert all(r.content_type == MEDIA_TYPE for r in receiver.received)
    return [e for e in events if e.serial == serial]


def test_gateway_down_during_revocation_gets_it_when_back(incident, receiver):  # type: ignore[no-untyped-def]
    name, serial = _setup(incident, receiver, "down")
    try:
        proc = incident.ikepki("revoke", serial, "--reason", "keyCompromise", "--yes", "--json", "--wait", "1")
        push = {p["gateway"]: p for p in json.loads(proc.stdout)["push"]}
        assert push[name]["delivered"] == 0 and push[name]["pending"] == 1
        row = wait_for(lambda: (r := _row(incident, serial, name))["attempts"] >= 1 and r["last_error"] and r, 10)
        assert row["status"] == "pending", row
        with incident.api() as api:
            health = api.get(f"/gateways/{name}").json()
        assert health["pending"] >= 1 and health["last_error"], health

        receiver.start()  # the gateway comes back
        row = wait_for(lambda: (r := _row(incident, serial, name))["status"] == "delivered" and r, 15)
        assert row, _row(incident, serial, name)
        events = _events(incident, receiver, serial)
        assert events and events[0].type == "revoked" and events[0].reason == "keyCompromise"
        with incident.api() as api:
            assert api.get(f"/gateways/{name}").json()["last_success_at"]
        cli = CliRunner().invoke(gateways_app, ["deliveries", "--serial", serial, "--json", "--dir", str(incident.dir)])
        assert cli.exit_code == 0, cli.output
        mine = [d for d in json.loads(cli.output) if d["gateway"] == name]
        assert mine[0]["status"] == "delivered" and mine[0]["attempts"] >= 2
    finally:
        incident.disable_gateway(name)


def test_server_killed_between_commit_and_delivery_delivers_after_restart(incident, receiver):  # type: ignore[no-untyped-def]
    name, serial = _setup(incident, receiver, "crash")
    receiver.hang = 30.0  # the worker claims the delivery and is stuck in it...
    receiver.start()
    try:
        with incident.api() as api:  # through the admin API this time
            resp = api.post("/revocations", json={"serials": [serial], "reason": "keyCompromise"})
            assert resp.status_code == 200 and resp.json()["revoked"] == [serial], resp.text
        assert receiver.got_request.wait(20), "the push worker never tried the webhook"
        assert _row(incident, serial, name)["status"] == "pending"
        receiver.hang = 0.0
        incident.restart(signal.SIGKILL)  # ...when the server dies
        row = wait_for(lambda: (r := _row(incident, serial, name))["status"] == "delivered" and r, 20)
        assert row, _row(incident, serial, name)
        assert row["attempts"] >= 2  # the claim before the crash counted; the lease let the restart retry
        events = _events(incident, receiver, serial)
        assert len({e.event_id for e in events}) == 1  # one event, delivered at least once
    finally:
        incident.disable_gateway(name)


def test_bundled_ikev2_responder_accepts_the_pushed_event(incident, tmp_path):  # type: ignore[no-untyped-def]
    """The ``responder`` driver against the real bundled responder (python -m gateway.cli serve):
    it verifies the JWS against the ikepki root and applies the revocation."""
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO, free_port

    tag = os.urandom(3).hex()
    gw_pem, gw_key, _ = incident.issue("gateway", x509.DNSName(f"rgw-{tag}.example.test"), f"rgw-{tag}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp = s.getsockname()[1]
    push_port = free_port()
    events = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--listen", f"127.0.0.1:{udp}",
                             "--push-listen", f"127.0.0.1:{push_port}", "--cert", str(gw_pem), "--key", str(gw_key),
                             "--ca-bundle", str(incident.dir / "root-ca.pem"), "--ocsp", "off",
                             "--control", str(tmp_path / "control.sock"), "--event-log", str(events)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "err.log").open("wb"))
    name = f"responder-{tag}"
    try:
        import httpx

        assert wait_for(lambda: _up(httpx, push_port), 30), (tmp_path / "err.log").read_text()
        incident.add_gateway(name, "responder", f"http://127.0.0.1:{push_port}")
        _, _, serial = incident.issue("user", x509.RFC822Name(f"resp-{tag}@example.test"), f"resp-{tag}")
        with incident.api() as api:
            assert api.post("/revocations", json={"serials": [serial], "reason": "keyCompromise"}).status_code == 200
        row = wait_for(lambda: (r := _row(incident, serial, name))["status"] == "delivered" and r, 20)
        assert row, _row(incident, serial, name)
        applied = [json.loads(line) for line in events.read_text().splitlines() if serial in line]
        assert any(e.get("accepted") is True and e.get("serial") == serial for e in applied), applied
    finally:
        incident.disable_gateway(name)
        proc.terminate()
        proc.wait(10)


def _up(httpx: Any, port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
