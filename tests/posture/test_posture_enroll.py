"""End to end with a real ``ikepki serve``, real swtpm and the ``ikepki device`` agent (subprocess):
a measured good boot gets a compliant certificate; a tampered PCR 7 at renewal gets a quarantine
certificate and holds the compliant one; a refused posture gets nothing; replayed quotes, a quote by
another AK, a wrong nonce and a forged event log are refused and change nothing."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from device_helpers import DevicePki, device_cli, run_ikepki
from posture_helpers import GOOD_FACTS, SELECTION, boot, encode_event, extend, measure, tools

from ca.model import CertStatus
from ca.oids import POSTURE_COMPLIANT, POSTURE_QUARANTINE
from enrollment.attestation.cli import AgentTpm
from enrollment.posture.evidence import Evidence, b64e, qualifying_data

HOLD = CertStatus.hold


def _policies(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return {p.policy_identifier for p in cert.extensions.get_extension_for_class(x509.CertificatePolicies).value}


def _files(tmp: Path, facts: dict[str, Any], log: bytes) -> tuple[Path, Path]:
    (tmp / "facts.json").write_text(json.dumps(facts))
    (tmp / "boot.log").write_bytes(log)
    return tmp / "facts.json", tmp / "boot.log"


def _enroll(pki: DevicePki, tpm: Any, out: Path, tmp: Path, facts: Path, log: Path) -> Any:
    return device_cli(pki, "enroll", "--acme", pki.directory, "--tpm", tpm.tcti, "--ca-bundle", pki.root_pem,
                      "--out", str(out), "--facts", str(facts), "--event-log", str(log), "--json",
                      eab=pki.eab(), tmp=tmp)


def _renew(out: Path, facts: Path, log: Path) -> Any:
    return run_ikepki("device", "renew", "--out", str(out), "--force", "--facts", str(facts), "--event-log", str(log),
                      "--json", check=False, timeout=120)


def test_compliant_then_tampered_then_refused(posture_pki: dict[str, Any], tmp_path: Path) -> None:
    pki: DevicePki = posture_pki["pki"]
    tpm = posture_pki["tpms"][0]
    good = boot()
    with AgentTpm(tpm.tcti) as dev:
        measure(dev, good)
    facts, log = _files(tmp_path, GOOD_FACTS, good.log)
    out = tmp_path / "out"

    proc = _enroll(pki, tpm, out, tmp_path, facts, log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["posture"] == {"verdict": "compliant", "reasons": []}
    posture = json.loads((out / "posture.json").read_text())
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert POSTURE_COMPLIANT in _policies(cert) and POSTURE_QUARANTINE not in _policies(cert)
    from datetime import datetime
    assert cert.not_valid_after_utc <= datetime.fromisoformat(posture["expires"])  # never past the evidence
    device = posture["device"]
    compliant_serial = cert.serial_number

    # tamper: one more measurement into PCR 7 (e.g. a foreign db entry); the log tells the truth about it
    tampered_log = good.log + encode_event(7, 0x800000E0, b"db: foreign certificate")
    with AgentTpm(tpm.tcti) as dev:
        extend(dev, 7, b"db: foreign certificate")
    facts, log = _files(tmp_path, GOOD_FACTS, tampered_log)
    proc = _renew(out, facts, log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["posture"]["verdict"] == "quarantine"
    assert any("PCR 7" in r for r in result["posture"]["reasons"])
    quarantined = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert POSTURE_QUARANTINE in _policies(quarantined) and POSTURE_COMPLIANT not in _policies(quarantined)
    store = pki.store()
    assert store.get(compliant_serial).status is HOLD  # the downgrade held the compliant certificate
    assert store.get(quarantined.serial_number).status is CertStatus.valid

    # refused: the policy refuses an unencrypted disk; no certificate, a clear error, exit 5
    facts, log = _files(tmp_path, {**GOOD_FACTS, "disk_encryption": False}, tampered_log)
    proc = _renew(out, facts, log)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "postureRefused" in proc.stderr and "disk_encryption" in proc.stderr
    assert x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()).serial_number == \
        quarantined.serial_number
    assert store.get(quarantined.serial_number).status is HOLD  # refused holds every machine certificate

    # the operator's views: CLI and admin API
    shown = run_ikepki("device", "posture", device, "--dir", str(pki.dir), "--json", check=True)
    doc = json.loads(shown.stdout)
    assert doc["verdict"] == "refused" and [h["verdict"] for h in doc["history"][:2]] == ["quarantine", "compliant"]
    with httpx.Client(verify=pki.tls(), timeout=30) as http:
        headers = {"Authorization": f"Bearer {pki.server.admin_token()}"}
        resp = http.get(f"{pki.server.https_url}/admin/v1/posture", params={"device": device}, headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.json()["latest"]["verdict"] == "refused"
        assert resp.json()["latest"]["pcrs"]["sha256"]["7"] != good.pcr(7).hex()
        resp = http.get(f"{pki.server.https_url}/admin/v1/posture", params={"device": device})
        assert resp.status_code == 401
    # the console's certificate page: the device's latest verdict with the checks that failed, and
    # the mark this certificate was issued with
    with httpx.Client(base_url=pki.server.https_url, verify=pki.tls(), timeout=30) as http:
        assert console_sign_in(http, pki.server.admin_token()).status_code == 303
        page = http.get(f"/console/certificates/{quarantined.serial_number:x}").text
    assert re.search(r'id="posture-verdict">refused<', page), page
    reasons = re.search(r'<ul id="posture-reasons">(.*?)</ul>', page, re.S)
    assert reasons and "disk_encryption" in reasons.group(1)
    assert re.search(r'id="posture-mark">quarantine<', page)


def console_sign_in(http: httpx.Client, token: str) -> httpx.Response:
    """The console's token sign-in form (double-submit CSRF), as a browser posts it."""
    csrf = re.search(r'name="csrf" value="([^"]+)"', http.get("/console/login").text)
    assert csrf
    return http.post("/console/login", data={"csrf": csrf.group(1), "token": token})


def _evidence_parts(pki: DevicePki, tpm: Any, tmp: Path) -> tuple[bytes, httpx.Client]:
    """Enroll the device (good boot) through the agent and return its AK certificate."""
    with AgentTpm(tpm.tcti) as dev:
        measure(dev, boot())
    facts, log = _files(tmp, GOOD_FACTS, boot().log)
    proc = _enroll(pki, tpm, tmp / "out", tmp, facts, log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ak = x509.load_pem_x509_certificates((tmp / "out" / "ak-chain.pem").read_bytes())[0]
    from cryptography.hazmat.primitives.serialization import Encoding
    return ak.public_bytes(Encoding.DER), httpx.Client(verify=pki.tls(), timeout=30)


def test_replayed_foreign_wrong_nonce_and_forged_log_are_refused(posture_pki: dict[str, Any], tmp_path: Path) -> None:
    pki: DevicePki = posture_pki["pki"]
    tpm = posture_pki["tpms"][1]
    ak_der, http = _evidence_parts(pki, tpm, tmp_path)
    base = f"{pki.server.https_url}/posture/v1"
    device = json.loads((tmp_path / "out" / "posture.json").read_text())["device"]
    before = json.loads(run_ikepki("device", "posture", device, "--dir", str(pki.dir), "--json").stdout)

    def nonce() -> bytes:
        resp = http.post(f"{base}/nonce", json={"akCertificate": b64e(ak_der)})
        assert resp.status_code == 201, resp.text
        assert resp.json()["pcrSelection"] == SELECTION
        from enrollment.posture.evidence import b64d
        return b64d(resp.json()["nonce"], "nonce", 64)

    def submit(ev: Evidence) -> httpx.Response:
        return http.post(f"{base}/evidence", json=ev.wire())

    def quote(dev: AgentTpm, n: bytes, facts: dict[str, Any] = GOOD_FACTS) -> tuple[bytes, bytes, Any]:
        return dev.quote(SELECTION, qualifying_data(n, facts))

    with http, AgentTpm(tpm.tcti) as dev:
        n = nonce()
        q, s, pcrs = quote(dev, n)
        # a firmware-sized log (~120 KB): EV_NO_ACTION events are logged but never extended
        big_log = boot().log + b"".join(encode_event(0, 3, os.urandom(40_000)) for _ in range(3))
        genuine = Evidence(ak_der, n, q, s, pcrs, GOOD_FACTS, big_log)
        ok = submit(genuine)
        assert ok.status_code == 201 and ok.json()["verdict"] == "compliant", ok.text

        def refused(ev: Evidence, reason: str) -> None:
            resp = submit(ev)
            assert resp.status_code == 400, resp.text
            assert resp.json()["reason"] == reason, resp.text
            assert resp.json()["type"] == "urn:ietf:params:acme:error:badAttestationStatement"

        refused(genuine, "bad-nonce")  # replay of an accepted quote

        # tpm2-tools as an independent producer: tpm2_quote with the persistent AK, accepted by the server
        n0 = nonce()
        qd = qualifying_data(n0, GOOD_FACTS)
        tools(tpm.tcti, tmp_path, "tpm2_quote", "-c", "0x81000002", "-l", SELECTION, "-q", qd.hex(),
              "-m", "tq.msg", "-s", "tq.sig", "-g", "sha256")
        by_tools = Evidence(ak_der, n0, (tmp_path / "tq.msg").read_bytes(), (tmp_path / "tq.sig").read_bytes(),
                            dev.pcr_values(SELECTION), GOOD_FACTS, boot().log)
        ok = submit(by_tools)
        assert ok.status_code == 201 and ok.json()["verdict"] == "compliant", ok.text
        n2 = nonce()
        q2, s2, pcrs2 = quote(dev, os.urandom(32))  # quoted over some other nonce
        refused(Evidence(ak_der, n2, q2, s2, pcrs2, GOOD_FACTS, None), "wrong-qualifying-data")
        n3 = nonce()
        q3, s3, pcrs3 = quote(dev, n3, {**GOOD_FACTS, "edr_running": False})  # facts swapped after quoting
        refused(Evidence(ak_der, n3, q3, s3, pcrs3, GOOD_FACTS, None), "wrong-qualifying-data")
        n4 = nonce()
        from device_helpers import running_swtpm
        with running_swtpm() as other, AgentTpm(other.tcti) as foreign:
            foreign.ak_public()
            q4, s4, pcrs4 = quote(foreign, n4)
        refused(Evidence(ak_der, n4, q4, s4, pcrs4, GOOD_FACTS, None), "bad-signature")
        # forged event log: the PCRs hold a tampered boot, the log claims the good one
        extend(dev, 7, b"db: foreign certificate")
        n5 = nonce()
        q5, s5, pcrs5 = quote(dev, n5)
        refused(Evidence(ak_der, n5, q5, s5, pcrs5, GOOD_FACTS, boot().log), "event-log")
        # a nonce of another AK / an unknown AK certificate
        refused(Evidence(b"\x30\x03\x02\x01\x01", n5, q5, s5, pcrs5, GOOD_FACTS, None), "unknown-ak")
        bad = http.post(f"{base}/evidence", json={"akCertificate": b64e(ak_der), "nonce": "!!"})
        assert bad.status_code == 400 and bad.json()["reason"] == "malformed"
        huge = http.post(f"{base}/evidence", content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
                         headers={"content-type": "application/json"})
        assert huge.status_code == 413
        assert http.post(f"{base}/evidence", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    after = json.loads(run_ikepki("device", "posture", device, "--dir", str(pki.dir), "--json").stdout)
    assert after["latest"]["id"] == before["latest"]["id"] + 2  # only the two genuine quotes were recorded
    assert after["verdict"] == "compliant"


def test_edr_alert_quarantines_the_device_until_an_operator_clears_it(posture_pki: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """response's ``action: posture``: a signed EDR webhook lowers the posture (hold pushed), the next
    renewal with good evidence still gets a quarantine certificate; an operator's ``compliant`` clears it."""
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    pki: DevicePki = posture_pki["pki"]
    tpm = posture_pki["tpms"][2]
    with AgentTpm(tpm.tcti) as dev:
        measure(dev, boot())
    facts, log = _files(tmp_path, GOOD_FACTS, boot().log)
    out = tmp_path / "out"
    proc = _enroll(pki, tpm, out, tmp_path, facts, log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    device = json.loads((out / "posture.json").read_text())["device"]
    first = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert POSTURE_COMPLIANT in _policies(first)

    body = json.dumps({"device": device, "severity": "critical", "detection": "ransomware"}).encode()
    now = datetime.now(UTC)
    msg_id = "msg_" + os.urandom(6).hex()
    headers = {"content-type": "application/json", "webhook-id": msg_id,
               "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(posture_pki["edr_secret"]).sign(msg_id, now, body)}
    resp = httpx.post(f"{pki.server.https_url}/hooks/v1/edr", content=body, headers=headers, verify=pki.tls(),
                      timeout=30)
    assert resp.status_code == 200, resp.text
    assert pki.store().get(first.serial_number).status is HOLD
    shown = json.loads(run_ikepki("device", "posture", device, "--dir", str(pki.dir), "--json").stdout)
    assert (shown["verdict"], shown["latest"]["origin"]) == ("quarantine", "automated")

    proc = _renew(out, facts, log)  # good evidence, but the automated verdict stays in force
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["posture"]["verdict"] == "quarantine"
    assert POSTURE_QUARANTINE in _policies(x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()))

    with httpx.Client(verify=pki.tls(), timeout=30) as http:
        resp = http.post(f"{pki.server.https_url}/admin/v1/posture", json={
            "device": device, "verdict": "compliant", "reason": "reimaged, EDR clean"},
            headers={"Authorization": f"Bearer {pki.server.admin_token()}"})
        assert resp.status_code == 200, resp.text
    proc = _renew(out, facts, log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["posture"]["verdict"] == "compliant"
    assert POSTURE_COMPLIANT in _policies(x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()))
