"""The hook edge on a real ``ikepki serve``: Standard Webhooks messages signed by the reference
library, Keylime notifications signed as Keylime signs them, and every refusal (unknown source,
wrong token, bad signature, stale timestamp, replay, size, media type) as an RFC 9457 problem
that changes nothing and is audited."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from response_lab import Lab, dump
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from ca.store.sql import AUDIT

pytestmark = [pytest.mark.interop]
TAG = secrets.token_hex(3)
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="module")
def kl_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def http_lab(lab: Lab, kl_key: rsa.RSAPrivateKey) -> Lab:
    (lab.work / "soar-secret").write_text(SECRET)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keylime-verifier")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(kl_key.public_key())
            .serial_number(7).not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .sign(kl_key, hashes.SHA256()))
    (lab.work / "keylime-revocation.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    lab.write_hooks({
        "sources": {
            f"am-{TAG}": {"format": "alertmanager", "bearer_token": f"file:{lab.bearer_file}"},
            f"soar-{TAG}": {"format": "standard-webhooks", "secret": f"file:{lab.work / 'soar-secret'}"},
            f"kl-{TAG}": {"format": "keylime", "verifier_cert": str(lab.work / "keylime-revocation.crt")}},
        "rules": [
            {"name": f"edr-{TAG}", "sources": [f"soar-{TAG}"], "match": {"detection.severity": "critical"},
             "target": {"kind": "identity", "field": "user"}, "action": "revoke", "reason": "keyCompromise"},
            {"name": f"attest-{TAG}", "sources": [f"kl-{TAG}"], "target": {"kind": "device", "field": "agent_id"},
             "action": "revoke", "reason": "keyCompromise", "block_device": True},
            {"name": f"edr-hold-{TAG}", "sources": [f"soar-{TAG}"], "match": {"detection.severity": "high"},
             "target": {"kind": "device", "field": "device"}, "action": "hold", "release_on_resolve": True},
            {"name": f"dry-{TAG}", "sources": [f"am-{TAG}"], "target": {"kind": "device", "field": "labels.device"},
             "action": "hold", "dry_run": True}],
        "guard": {"max_certificates": 10_000, "max_devices": 1000}})
    return lab


def _user_cert(lab: Lab, email: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.csr import parse_csr
    from ca.model import IssuanceRequest, Requester

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={email}"))
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
           .sign(key, hashes.SHA256()))
    issued = lab.deployment.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(serialization.Encoding.PEM)),
                                                            "user", Requester("test", "response-http")))
    return issued.info.serial_hex


def _signed(body: bytes, msg_id: str | None = None, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    msg_id = msg_id or f"msg_{secrets.token_hex(8)}"
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(SECRET).sign(msg_id, at, body)}


def _refusals(lab: Lab, source: str) -> list[dict[str, Any]]:
    with lab.deployment.db.read() as conn:
        rows = conn.execute(select(AUDIT).where(AUDIT.c.action == "hook-refused",
                                                AUDIT.c.actor == f"hook:{source}")).all()
    return [json.loads(r.detail) for r in rows]


def _problem(resp: Any, status: int, slug: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"] == f"urn:ikepki:hooks:{slug}" and body["status"] == status and body["detail"]


def test_generic_signed_event_revokes_identity_and_refuses_replay(http_lab: Lab) -> None:
    lab = http_lab
    email = f"victim-{TAG}@example.test"
    serial = _user_cert(lab, email)
    body = dump({"source": "crowdstrike", "status": "firing", "fingerprint": f"det-{TAG}", "user": email,
                 "detection": {"severity": "critical", "technique": "T1003"}})
    headers = _signed(body)
    resp = lab.post_hook(f"soar-{TAG}", body, headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["alerts"][0]["rules"][0]["status"] == "executed"
    assert lab.status(serial) == "revoked"
    info = lab.deployment.store.get(int(serial, 16))
    assert info.revocation_reason.name == "keyCompromise"
    before = len(lab.incidents(limit=1000))
    _problem(lab.post_hook(f"soar-{TAG}", body, headers), 409, "replay")
    stale = _signed(body, at=datetime.now(UTC) - timedelta(minutes=6))
    _problem(lab.post_hook(f"soar-{TAG}", body, stale), 401, "stale-timestamp")
    tampered = body.replace(b"critical", b"CRITICAL")
    _problem(lab.post_hook(f"soar-{TAG}", tampered, _signed(body)), 401, "bad-signature")
    _problem(lab.post_hook(f"soar-{TAG}", body, {}), 401, "unauthenticated")
    assert len(lab.incidents(limit=1000)) == before
    assert {r["refusal"] for r in _refusals(lab, f"soar-{TAG}")} >= {"replay", "stale-timestamp", "bad-signature",
                                                                      "unauthenticated"}


def test_message_id_is_forgotten_when_handling_fails_unexpectedly(http_lab: Lab,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Any failure after the id was remembered (not only a PKIError) forgets it, so the sender's
    retry of the same message is handled instead of refused as a replay. In-process app on the
    lab's deployment; the failing engine is the only made-up part."""
    import anyio

    from response.http import create_app
    from response.service import Response

    lab = http_lab
    monkeypatch.setenv("IKEPKI_RESPONSE_CONFIG_FILE", str(lab.hooks_file))  # as the lab's server has it
    resp = Response(lab.deployment)
    app = create_app(resp)
    real = resp.engine

    class Broken:
        def handle(self, *_: Any) -> Any:
            raise RuntimeError("unexpected")

    body = dump({"source": "edr", "status": "firing", "fingerprint": f"unexp-{TAG}", "user": "nobody@example.test"})
    headers = {**_signed(body), "content-type": "application/json"}

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("192.0.2.8", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="https://hooks.test") as client:
            return await client.post(f"/hooks/v1/soar-{TAG}", content=body, headers=headers)

    resp.__dict__["engine"] = Broken()
    assert anyio.run(post).status_code == 500
    resp.__dict__["engine"] = real
    again = anyio.run(post)
    assert again.status_code == 200, again.text


def test_keylime_signed_notification_revokes_and_blocks_the_agent_device(http_lab: Lab,
                                                                          kl_key: rsa.RSAPrivateKey) -> None:
    lab = http_lab
    agent = f"agent-{TAG}"
    _, _, serial = lab.issue_device(agent)
    msg = json.dumps({"type": "revocation", "ip": "127.0.0.1", "agent_id": agent, "port": 9002,
                      "tpm_policy": "{}", "meta_data": "{}", "event_time": "Sun Dec  6 20:00:00 2026",
                      "event_id": "measured_boot_invalid", "severity_label": "emergency", "context": "{}"})
    sig = base64.b64encode(kl_key.sign(msg.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                                 salt_length=padding.PSS.MAX_LENGTH),
                                       hashes.SHA256())).decode()
    forged = dump({"msg": msg.replace("measured_boot_invalid", "x"), "signature": sig})
    _problem(lab.post_hook(f"kl-{TAG}", forged), 401, "bad-signature")
    _problem(lab.post_hook(f"kl-{TAG}", dump({"msg": msg, "signature": "none"})), 401, "bad-signature")
    assert lab.status(serial) == "valid"
    resp = lab.post_hook(f"kl-{TAG}", dump({"msg": msg, "signature": sig}))
    assert resp.status_code == 200, resp.text
    assert lab.status(serial) == "revoked"
    assert lab.deployment.store.is_device_blocked(agent, None)
    # the signature covers msg only, with no nonce: the same message again is a replay
    _problem(lab.post_hook(f"kl-{TAG}", dump({"msg": msg, "signature": sig})), 409, "replay")


def test_refusals_change_nothing(http_lab: Lab) -> None:
    lab = http_lab
    before = len(lab.incidents(limit=1000))
    body = dump({"version": "4", "status": "firing", "alerts": []})
    _problem(lab.post_hook(f"nope-{TAG}", body, {"authorization": "Bearer x"}), 404, "unknown-source")
    wrong = lab.post_hook(f"am-{TAG}", body, {"authorization": "Bearer wrong"})
    _problem(wrong, 401, "unauthenticated")
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    token = {"authorization": f"Bearer {lab.bearer_file.read_text()}"}
    _problem(lab.post_hook(f"am-{TAG}", body, {**token, "content-type": "text/plain"}), 415,
             "unsupported-media-type")
    _problem(lab.post_hook(f"am-{TAG}", b"{" + b" " * (300 * 1024) + b"}", token), 413, "too-large")
    chunked = httpx.post(f"{lab.server.https_url}/hooks/v1/am-{TAG}", verify=lab.tls(), timeout=30,
                         content=iter([b"{"] + [b" " * 65536] * 5 + [b"}"]),  # no Content-Length
                         headers={"content-type": "application/json", **token})
    _problem(chunked, 413, "too-large")
    _problem(lab.post_hook(f"am-{TAG}", b'{"version": "4", "alerts": [1]}', token), 400, "malformed")
    assert len(lab.incidents(limit=1000)) == before
    assert {r["refusal"] for r in _refusals(lab, f"am-{TAG}")} >= {"unauthenticated", "unsupported-media-type",
                                                                    "too-large", "malformed"}
    assert _refusals(lab, f"nope-{TAG}")
    _problem(lab.post_hook("..%2F..%2Fadmin", body, token), 404, "unknown-source")
    _problem(lab.post_hook("x" * 300, body, token), 404, "unknown-source")
    assert _refusals(lab, "(invalid name)")
    wrong_method = httpx.get(f"{lab.server.https_url}/hooks/v1/am-{TAG}", verify=lab.tls(), timeout=30)
    assert wrong_method.status_code == 405 and wrong_method.headers["content-type"] == "application/problem+json"


def test_dry_run_rule_records_but_changes_nothing(http_lab: Lab) -> None:
    lab = http_lab
    name = f"dry-{TAG}"
    _, _, serial = lab.issue_device(name)
    body = dump({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "X", "device": name}, "annotations": {},
         "startsAt": "2026-12-06T20:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"fp-{TAG}"}]})
    resp = lab.post_hook(f"am-{TAG}", body, {"authorization": f"Bearer {lab.bearer_file.read_text()}"})
    assert resp.status_code == 200 and resp.json()["alerts"][0]["rules"][0]["status"] == "dry-run", resp.text
    assert lab.status(serial) == "valid"
    [inc] = [i for i in lab.incidents(limit=1000) if i["target_value"] == name]
    assert inc["status"] == "dry-run" and inc["serials"] == [serial]


def test_broken_hooks_file_keeps_the_previous_rules(http_lab: Lab) -> None:
    lab = http_lab
    good = lab.hooks_file.read_text()
    try:
        lab.hooks_file.write_text("rules: [{name: broken, action: revoke}]\n")  # no target, no reason
        import time

        time.sleep(0.6)
        body = dump({"version": "4", "status": "firing", "alerts": []})
        resp = lab.post_hook(f"am-{TAG}", body, {"authorization": f"Bearer {lab.bearer_file.read_text()}"})
        assert resp.status_code == 200, resp.text  # the previous sources and rules are still in force
        with lab.deployment.db.read() as conn:
            assert conn.execute(select(AUDIT).where(AUDIT.c.action == "hooks-config-refused")).first()
    finally:
        lab.write_hooks_text(good)


def test_keylime_notifier_code_posts_over_mutual_tls(http_lab: Lab, kl_key: rsa.RSAPrivateKey,
                                                     tmp_path: Path) -> None:
    """Keylime 7.14's webhook always presents the verifier's client certificate and checks the
    server against ``trusted_server_ca``: ikepki's listener accepts only client certificates from
    its own CAs, so the verifier's webhook client certificate comes from ikepki here — and the
    source requires its subject on top of the message signature."""
    lab = http_lab
    agent = f"kl-agent-{TAG}"
    _, _, serial = lab.issue_device(agent)
    client_cert, client_key, _ = lab.issue_device(f"keylime-verifier-{TAG}")
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "client-cert.crt").write_bytes(client_cert)
    (tls / "client-private.pem").write_bytes(client_key)
    (tmp_path / "revocation-private.pem").write_bytes(kl_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    conf = tmp_path / "verifier.conf"
    conf.write_text(f"""[verifier]
tls_dir = {tls}
trusted_server_ca = ['{lab.dir / "root-ca.pem"}']
client_cert = client-cert.crt
client_key = client-private.pem
client_key_password =
request_timeout = 10
retry_interval = 0.5
exponential_backoff = False
max_retries = 3

[revocations]
enabled_revocation_notifications = ['webhook']
webhook_url = {lab.server.https_url}/hooks/v1/klm-{TAG}
""")
    conf.chmod(0o600)
    hooks = yaml.safe_load(lab.hooks_file.read_text())
    hooks["sources"][f"klm-{TAG}"] = {"format": "keylime", "verifier_cert": str(lab.work / "keylime-revocation.crt"),
                                      "client_cert_subject": f"CN=keylime-verifier-{TAG}.example.test"}
    hooks["rules"][1]["sources"].append(f"klm-{TAG}")
    lab.write_hooks(hooks)
    env = {**os.environ, "KEYLIME_VERIFIER_CONFIG": str(conf), "KEYLIME_DIR": str(tmp_path)}
    env.pop("SOFTHSM2_CONF", None)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("keylime_sender.py")),
                           str(tmp_path / "revocation-private.pem"), agent], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab.status(serial) == "revoked", proc.stdout + proc.stderr
    assert lab.deployment.store.is_device_blocked(agent, None)
    [inc] = [i for i in lab.incidents(limit=1000) if i["target_value"] == agent]
    assert inc["source"] == f"klm-{TAG}" and inc["fingerprint"] == "pcr_validation.invalid_pcr_7"


def test_generic_resolved_releases_the_hold(http_lab: Lab) -> None:
    lab = http_lab
    name = f"soar-dev-{TAG}"
    _, _, serial = lab.issue_device(name)
    firing = dump({"status": "firing", "fingerprint": f"case-{TAG}", "device": name,
                   "detection": {"severity": "high"}})
    assert lab.post_hook(f"soar-{TAG}", firing, _signed(firing)).status_code == 200
    assert lab.status(serial) == "hold"
    resolved = dump({"status": "resolved", "fingerprint": f"case-{TAG}", "device": name})
    resp = lab.post_hook(f"soar-{TAG}", resolved, _signed(resolved))
    assert resp.status_code == 200, resp.text
    assert resp.json()["alerts"][0]["rules"][0]["status"] == "released"
    assert lab.status(serial) == "valid"
