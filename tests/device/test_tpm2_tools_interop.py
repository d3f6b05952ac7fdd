"""An independent device-side client for AK enrollment: tpm2-tools 5.4 (tpm2_nvread, tpm2_createak,
tpm2_activatecredential with a PolicySecret(endorsement) session) talks to ``/attest/v1/ak/start|finish``;
the AK certificate it receives verifies with openssl and certifies the tpm2-tools AK."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from device_helpers import DevicePki, root_conftest

CREDENTIAL_HEADER = bytes.fromhex("badcc0de00000001")  # tpm2-tools credential file: magic + version


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tools(tpm: Any, cwd: Path, *cmd: str) -> None:
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}"
    subprocess.run(["tpm2_flushcontext", "-t"], cwd=cwd, env=env, capture_output=True, check=False)
    subprocess.run(["tpm2_flushcontext", "-s"], cwd=cwd, env=env, capture_output=True, check=False)


def _activate(tpm: Any, cwd: Path) -> None:
    """PolicySecret(TPM_RH_ENDORSEMENT) session for the L-1 EK, then TPM2_ActivateCredential (one sequence)."""
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    steps = [["tpm2_startauthsession", "--policy-session", "-S", "session.ctx"],
             ["tpm2_policysecret", "-S", "session.ctx", "-c", "e"],
             ["tpm2_activatecredential", "-c", "ak.ctx", "-C", "0x81010001", "-i", "cred.out", "-o", "secret.bin",
              "-P", "session:session.ctx"]]
    try:
        for cmd in steps:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    finally:
        for flag in ("-t", "-s"):
            subprocess.run(["tpm2_flushcontext", flag], cwd=cwd, env=env, capture_output=True, check=False)


def test_tpm2_tools_enrolls_an_ak(pki: DevicePki, device_tpm: Any, tmp_path: Path) -> None:
    root_conftest.require_binary("tpm2_createak")
    _tools(device_tpm, tmp_path, "tpm2_nvread", "0x1c00002", "-C", "o", "-o", "ek.der")
    _tools(device_tpm, tmp_path, "tpm2_createak", "-C", "0x81010001", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256",
           "-s", "ecdsa", "-u", "ak.pub", "-f", "pem", "-r", "ak.priv")
    _tools(device_tpm, tmp_path, "tpm2_readpublic", "-c", "ak.ctx", "-o", "ak.tss")
    ak_public = (tmp_path / "ak.tss").read_bytes()[2:]  # TPM2B_PUBLIC → TPMT_PUBLIC
    ek64, ak64 = _b64e((tmp_path / "ek.der").read_bytes()), _b64e(ak_public)
    eab = pki.eab()
    mac = hmac.new(eab.key_bytes, f"ikepki-attest-v1\n{ek64}\n{ak64}".encode(), hashlib.sha256).digest()
    with httpx.Client(verify=pki.tls(), timeout=30) as http:
        resp = http.post(f"{pki.attest}/v1/ak/start", json={"ekCertificate": ek64, "akPublic": ak64,
                                                             "eab": {"kid": eab.kid, "mac": _b64e(mac)}})
        assert resp.status_code == 201, resp.text
        blob = resp.json()
        (tmp_path / "cred.out").write_bytes(CREDENTIAL_HEADER + _b64d(blob["idObject"]) +
                                            _b64d(blob["encryptedSecret"]))
        _activate(device_tpm, tmp_path)
        resp = http.post(f"{pki.attest}/v1/ak/finish", json={
            "challengeId": blob["challengeId"], "secret": _b64e((tmp_path / "secret.bin").read_bytes())})
        assert resp.status_code == 201, resp.text
        done = resp.json()
    ak_cert = x509.load_der_x509_certificate(_b64d(done["akCertificate"]))
    att_ca = x509.load_der_x509_certificate(_b64d(done["chain"][0]))
    (tmp_path / "ak-cert.pem").write_bytes(ak_cert.public_bytes(Encoding.PEM))
    (tmp_path / "att-ca.pem").write_bytes(att_ca.public_bytes(Encoding.PEM))
    proc = subprocess.run(["openssl", "verify", "-CAfile", pki.root_pem, "-untrusted", str(tmp_path / "att-ca.pem"),
                           str(tmp_path / "ak-cert.pem")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tools_key = load_pem_public_key((tmp_path / "ak.pub").read_bytes())
    spki = PublicFormat.SubjectPublicKeyInfo
    assert ak_cert.public_key().public_bytes(Encoding.DER, spki) == tools_key.public_bytes(Encoding.DER, spki)
    ek = x509.load_der_x509_certificate((tmp_path / "ek.der").read_bytes())
    ek_spki = ek.public_key().public_bytes(Encoding.DER, spki)
    assert done["ekFingerprint"] == hashlib.sha256(ek_spki).hexdigest()
