"""Push delivery survives a gateway outage and a server crash (at-least-once, nothing lost)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
from typing import Any

from cryptography import x509
from typer.testing import CliRunner

from ca.revocation_event import MEDIA_TYPE, verify_event
from ocsp.push.cli import gateways_app
from tests.swan_harness import wait_until


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
        row = wait_until(lambda: (r := _row(incident, serial, name))["attempts"] >= 1 and r["last_error"] and r, 10)
        assert row["status"] == "pending", row
        with incident.api() as api:
            health = api.get(f"/gateways/{name}").json()
        assert health["pending"] >= 1 and health["last_error"], health

        receiver.start()  # the gateway comes back
        row = wait_until(lambda: (r := _row(incident, serial, name))["status"] == "delivered" and r, 15)
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
        row = wait_until(lambda: (r := _row(incident, serial, name))["status"] == "delivered" and r, 20)
        assert row, _row(incident, serial, name)
        assert row["attempts"] >= 2  # the claim before the crash counted; the lease let the restart retry
        events = _events(incident, receiver, serial)
        assert len({e.event_id for e in events}) == 1  # one event, delivered at least once
    finally:
        incident.disable_gateway(name)


def _responder(incident, tmp_path, tls: bool, *extra: str):  # type: ignore[no-untyped-def]
    """The bundled responder (python -m gateway.cli serve) with an ikepki gateway certificate for
    IP:127.0.0.1, which serves as its IKE identity and — with ``tls`` — as its push listener's TLS
    certificate. Returns (process, push port, event log)."""
    import ipaddress
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO, free_port

    tag = os.urandom(3).hex()
    gw_pem, gw_key, _ = incident.issue("gateway", x509.IPAddress(ipaddress.ip_address("127.0.0.1")), f"rgw-{tag}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp = s.getsockname()[1]
    push_port = free_port()
    events = tmp_path / f"events-{tag}.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    push = ["--push-tls-cert", str(gw_pem), "--push-tls-key", str(gw_key)] if tls else []
    err = tmp_path / f"err-{tag}.log"
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--listen", f"127.0.0.1:{udp}",
                             "--push-listen", f"127.0.0.1:{push_port}", *push, *extra, "--cert", str(gw_pem),
                             "--key", str(gw_key), "--ca-bundle", str(incident.dir / "root-ca.pem"), "--ocsp", "off",
                             "--control", str(tmp_path / f"control-{tag}.sock"), "--event-log", str(events)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    import httpx

    verify = ssl.create_default_context(cafile=str(incident.dir / "root-ca.pem"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{push_port}"
    if not wait_until(lambda: proc.poll() is not None or _up(httpx, url, verify), 30) or proc.poll() is not None:
        proc.kill()
        raise AssertionError(err.read_text())
    return proc, url, events, err


def test_bundled_ikev2_responder_accepts_the_pushed_event_over_tls(incident, tmp_path):  # type: ignore[no-untyped-def]
    """The ``responder`` driver against the real bundled responder over HTTPS (its default):
    ``gateways add`` proves the URL with a signed test event that changes nothing, the pushed JWS
    is verified against the ikepki root and applied, ``gateways test`` reports reachability."""
    tag = os.urandom(3).hex()
    name = f"responder-{tag}"
    proc, url, events, _ = _responder(incident, tmp_path, tls=True)
    try:
        added = incident.ikepki("gateways", "add", "--name", name, "--kind", "responder", "--url", url, "--json")
        assert json.loads(added.stdout)["check"]["ok"] is True
        tested = [e for e in map(json.loads, events.read_text().splitlines()) if e.get("type") == "test"]
        assert len(tested) == 1 and tested[0]["accepted"] is True  # acknowledged, nothing else
        assert "serial" not in tested[0] and "terminated_sas" not in tested[0]

        # the same TLS listener registered as http:// is refused, and nothing is registered
        wrong = incident.ikepki("gateways", "add", "--name", f"{name}-http", "--kind", "responder", "--url",
                                url.replace("https://", "http://"), check=False)
        assert wrong.returncode == 5 and "speaks TLS" in wrong.stderr, wrong.stderr
        assert f"{name}-http" not in incident.ikepki("gateways", "list", "--json").stdout

        _, _, serial = incident.issue("user", x509.RFC822Name(f"resp-{tag}@example.test"), f"resp-{tag}")
        with incident.api() as api:
            assert api.post("/revocations", json={"serials": [serial], "reason": "keyCompromise"}).status_code == 200
        row = wait_until(lambda: (r := _row(incident, serial, name))["status"] == "delivered" and r, 20)
        assert row, _row(incident, serial, name)
        applied = [json.loads(line) for line in events.read_text().splitlines() if serial in line]
        assert any(e.get("accepted") is True and e.get("serial") == serial for e in applied), applied

        ok = incident.ikepki("gateways", "test", name)
        assert "ok" in ok.stdout and "acknowledged" in ok.stdout
        with incident.api() as api:  # live-SA probe over the verified HTTPS listener (ikepki's root trusted)
            health = api.get(f"/gateways/{name}/health").json()
        assert health["reachable"] is True and health["live_peers"] == 0, health
    finally:
        proc.terminate()
        proc.wait(10)
    try:
        down = incident.ikepki("gateways", "test", name, "--json", check=False)
        assert down.returncode == 6, down.stdout + down.stderr
        assert json.loads(down.stdout)["ok"] is False and "unreachable" in json.loads(down.stdout)["detail"]
    finally:
        incident.disable_gateway(name)


def test_plain_http_push_listener_only_on_request_and_https_to_it_is_refused(incident, tmp_path):  # type: ignore[no-untyped-def]
    """The responder refuses --push-listen without TLS unless --push-insecure-http (then warns
    loudly); ``gateways add --url https://…`` to that plain listener is refused with the reason,
    ``--no-check`` registers anyway."""
    import subprocess
    import sys

    from tests.conftest import REPO

    refused = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0",
                              "--push-listen", "127.0.0.1:0", "--cert", "x.pem", "--key", "x.key", "--ca-bundle",
                              str(incident.dir / "root-ca.pem")], cwd=REPO, capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 2 and "--push-insecure-http" in refused.stderr, refused.stderr

    tag = os.urandom(3).hex()
    proc, url, _, err = _responder(incident, tmp_path, False, "--push-insecure-http")
    try:
        assert "PLAIN HTTP" in err.read_text()
        https = url.replace("http://", "https://")
        wrong = incident.ikepki("gateways", "add", "--name", f"plain-{tag}", "--kind", "responder", "--url", https,
                                check=False)
        assert wrong.returncode == 5 and "plain HTTP" in wrong.stderr, wrong.stderr
        assert f"plain-{tag}" not in incident.ikepki("gateways", "list", "--json").stdout
        forced = incident.ikepki("gateways", "add", "--name", f"plain-{tag}", "--kind", "responder", "--url", https,
                                 "--no-check")
        assert "not checked" in forced.stdout
        plain = incident.ikepki("gateways", "add", "--name", f"plain-ok-{tag}", "--kind", "responder", "--url", url)
        assert "plain HTTP" in plain.stderr  # registered, with a warning
    finally:
        proc.terminate()
        proc.wait(10)
        for n in (f"plain-{tag}", f"plain-ok-{tag}"):
            with contextlib.suppress(AssertionError):
                incident.disable_gateway(n)


def test_vici_gateway_without_a_socket_is_not_registered(incident, tmp_path):  # type: ignore[no-untyped-def]
    name = f"vici-missing-{os.urandom(3).hex()}"
    proc = incident.ikepki("gateways", "add", "--name", name, "--kind", "vici", "--url",
                           f"unix://{tmp_path}/charon.vici", check=False)
    assert proc.returncode == 6 and "no such socket" in proc.stderr, proc.stderr
    assert name not in incident.ikepki("gateways", "list", "--json").stdout


def _up(httpx: Any, url: str, verify: Any) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False
