"""Independent SCEP clients against `ikepki serve`: strongSwan `pki --scepca/--scep` (5.9.8) and
Debian's micromdm `scepclient` (2.1.0)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.conftest import require_binary, run_ikepki
from tests.scep.conftest import ScepEnv

pytestmark = pytest.mark.interop
PKI_CONF = ("pki { load = random nonce aes sha1 sha2 md5 pem pkcs1 pkcs7 pkcs8 pkcs12 pgp dnskey sshkey x509 pubkey "
            "revocation constraints gmp openssl curl }\n")


def pki(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    conf = tmp / "strongswan.conf"
    if not conf.exists():
        conf.write_text(PKI_CONF)
    proc = subprocess.run([require_binary("pki"), *args], cwd=tmp, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "STRONGSWAN_CONF": str(conf)}, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"pki {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def admin_challenge(scep: ScepEnv, profile: str = "machine") -> str:
    srv = scep.server
    with httpx.Client(verify=ssl.create_default_context(cafile=str(srv.root_pem)), timeout=30) as client:
        r = client.post(f"{srv.https_url}/admin/v1/scep/challenges", json={"profile": profile},
                        headers={"authorization": f"Bearer {srv.admin_token()}"})
    assert r.status_code == 201, r.text
    return str(r.json()["challenge"])


def cli_challenge(scep: ScepEnv, profile: str = "machine") -> str:
    out = run_ikepki("scep", "challenge", "create", "--profile", profile, "--json", directory=scep.server.dir)
    return str(json.loads(out.stdout)["challenge"])


def verify_chain(scep: ScepEnv, leaf: Path) -> None:
    root = scep.server.dir / "root-ca.pem"
    rsa_ca = scep.server.dir / "ca" / "rsa.pem"
    proc = subprocess.run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(rsa_ca), str(leaf)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strongswan_enroll_with_one_time_password_then_renew(scep_defaults: ScepEnv, tmp_path: Path) -> None:
    """strongSwan ``pki --scepca`` needs a self-signed CA in GetCACert (``include_root: true``, the
    default): it writes the root to ca.crt and the RSA issuing CA to ca-1.crt."""
    scep = scep_defaults
    pki(tmp_path, "--scepca", "--url", scep.url, "--caout", "ca.crt", "--raout", "ra.crt", "--outform", "pem")
    assert {"ca.crt", "ca-1.crt", "ra.crt"} <= {p.name for p in tmp_path.iterdir()}
    key = pki(tmp_path, "--gen", "--type", "rsa", "--size", "2048", "--outform", "pem").stdout
    (tmp_path / "h1.key").write_text(key)
    otp = admin_challenge(scep)
    common = ["--url", scep.url, "--dn", "O=Example, CN=h1.example.test", "--san", "h1.example.test",
              "--cacert-enc", "ra.crt", "--cacert-sig", "ra.crt", "--cacert", "ca.crt", "--cacert", "ca-1.crt",
              "--outform", "pem"]
    out = pki(tmp_path, "--scep", "--in", "h1.key", "--password", otp, *common)
    (tmp_path / "h1.crt").write_text(out.stdout)
    cert = x509.load_pem_x509_certificate(out.stdout.encode())
    assert "Issuing CA RSA1" in cert.issuer.rfc4514_string()
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["h1.example.test"]
    verify_chain(scep, tmp_path / "h1.crt")

    # the one-time password is gone: the same password again fails with badRequest
    (tmp_path / "other.key").write_text(pki(tmp_path, "--gen", "--type", "rsa", "--size", "2048",
                                            "--outform", "pem").stdout)
    again = pki(tmp_path, "--scep", "--in", "other.key", "--password", otp, *common, check=False)
    assert again.returncode != 0 and "badRequest" in again.stderr + again.stdout

    # RenewalReq signed with the current certificate, new key
    (tmp_path / "h1b.key").write_text(pki(tmp_path, "--gen", "--type", "rsa", "--size", "2048",
                                          "--outform", "pem").stdout)
    renewed = pki(tmp_path, "--scep", "--in", "h1b.key", "--cert", "h1.crt", "--key", "h1.key", *common)
    new = x509.load_pem_x509_certificate(renewed.stdout.encode())
    assert new.serial_number != cert.serial_number and new.subject == cert.subject
    assert new.public_key() != cert.public_key()


def test_strongswan_des3_wrong_password_issues_nothing(scep_defaults: ScepEnv, tmp_path: Path) -> None:
    scep = scep_defaults
    pki(tmp_path, "--scepca", "--url", scep.url, "--caout", "ca.crt", "--raout", "ra.crt", "--outform", "pem")
    (tmp_path / "k.key").write_text(pki(tmp_path, "--gen", "--type", "rsa", "--size", "2048",
                                        "--outform", "pem").stdout)
    before = scep.counts()
    out = pki(tmp_path, "--scep", "--url", scep.url, "--in", "k.key", "--dn", "CN=h2.example.test", "--san",
              "h2.example.test", "--password", "not-a-valid-one", "--cipher", "des3", "--digest", "sha512",
              "--cacert-enc", "ra.crt", "--cacert-sig", "ra.crt", "--cacert", "ca.crt", "--outform", "pem",
              check=False)
    assert out.returncode != 0
    assert "badRequest" in out.stdout + out.stderr
    assert scep.counts() == before


def degenerate_certs(scep: ScepEnv) -> list[x509.Certificate]:
    resp = httpx.get(scep.url, params={"operation": "GetCACert"}, timeout=30)
    assert resp.status_code == 200
    with warnings.catch_warnings():  # strict DER: cryptography warns (and will refuse) on a BER SET OF
        warnings.simplefilter("error")
        return pkcs7.load_der_pkcs7_certificates(resp.content)


def scepclient(scep: ScepEnv, work: Path, cn: str, *extra: str) -> subprocess.CompletedProcess[str]:
    work.mkdir()  # scepclient writes and re-uses csr.pem in its working directory: one per identity
    return subprocess.run([require_binary("scepclient"), "-server-url", scep.url, "-challenge", cli_challenge(scep),
                           "-cn", cn, "-organization", "Example", "-private-key", "k.key", "-certificate", "c.pem",
                           *extra], cwd=work, capture_output=True, text=True, timeout=60, check=False)


def test_micromdm_scepclient_enrolls_with_default_flags(scep: ScepEnv, tmp_path: Path) -> None:
    """scepclient with its default flags (no -cacert-message, -keySize, -ca-fingerprint) encrypts
    to every GetCACert certificate: with ``include_root: false`` they are all RSA (RA + RSA issuing
    CA). DES-CBC + SHA-1 (``allow_single_des: true``), BER encryptedContent."""
    names = [c.subject.rfc4514_string() for c in degenerate_certs(scep)]
    assert len(names) == 2 and not any("Root" in n for n in names)
    work = tmp_path / "cwd"
    proc = scepclient(scep, work, "h3.example.test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cert = x509.load_pem_x509_certificate((work / "c.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "h3.example.test"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["h3.example.test"]  # SAN taken from the CN
    verify_chain(scep, work / "c.pem")


def test_micromdm_scepclient_against_the_defaults_is_refused_and_the_log_names_the_setting(
        scep_defaults: ScepEnv, tmp_path: Path) -> None:
    """Against the default settings, scepclient pinned to the RA certificate (-ca-fingerprint, so it
    does not encrypt to the EC root) gets FAILURE/badAlg: single DES stays opt-in. SCEP has no
    free-text field for the client; the server log names the setting that fixes it."""
    certs = degenerate_certs(scep_defaults)
    assert any("Root" in c.subject.rfc4514_string() for c in certs)  # the default GetCACert has the root
    [ra] = [c for c in certs if "SCEP RA" in c.subject.rfc4514_string()]
    before = scep_defaults.counts()
    proc = scepclient(scep_defaults, tmp_path / "cwd", "h4.example.test",
                      "-ca-fingerprint", ra.fingerprint(hashes.SHA256()).hex())
    assert proc.returncode != 0
    assert "badAlg" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "cwd" / "c.pem").exists()
    assert scep_defaults.counts()[0] == before[0]
    deadline = time.monotonic() + 5
    while "IKEPKI_SCEP_ALLOW_SINGLE_DES=1" not in scep_defaults.server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "IKEPKI_SCEP_ALLOW_SINGLE_DES=1" in scep_defaults.server.log.read_text()


def test_strongswan_polls_until_manual_approval_same_key_again(scep_defaults: ScepEnv, tmp_path: Path,
                                                               deployment: Any) -> None:
    """pki derives the transactionID from the key: a second PKCSReq with the same key (new subject,
    profile gateway with manual approval) reuses it; pki polls with CertPoll until `ikepki scep
    approve`."""
    scep = scep_defaults
    from enrollment.scep.service import ScepService
    from enrollment.scep.settings import ScepSettings

    pki(tmp_path, "--scepca", "--url", scep.url, "--caout", "ca.crt", "--raout", "ra.crt", "--outform", "pem")
    (tmp_path / "k.key").write_text(pki(tmp_path, "--gen", "--type", "rsa", "--size", "2048",
                                        "--outform", "pem").stdout)
    trust = ["--cacert-enc", "ra.crt", "--cacert-sig", "ra.crt", "--cacert", "ca.crt", "--cacert", "ca-1.crt",
             "--outform", "pem"]
    pki(tmp_path, "--scep", "--url", scep.url, "--in", "k.key", "--dn", "CN=first.example.test", "--san",
        "first.example.test", "--password", admin_challenge(scep), *trust)
    conf = tmp_path / "strongswan.conf"
    poller = subprocess.Popen([require_binary("pki"), "--scep", "--url", f"{scep.url}/gateway", "--in", "k.key",
                               "--dn", "CN=gw7.example.test", "--san", "gw7.example.test", "--password",
                               admin_challenge(scep, "gateway"), "--interval", "1", "--maxpolltime", "90", *trust],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "STRONGSWAN_CONF": str(conf)})
    try:
        service = ScepService(deployment, ScepSettings())
        deadline = time.monotonic() + 60
        pending = []
        while not pending and time.monotonic() < deadline and poller.poll() is None:
            pending = [t for t in service.repo.pending() if t.subject == "CN=gw7.example.test"]
            time.sleep(0.2)
        assert pending, poller.communicate(timeout=5)
        run_ikepki("scep", "approve", str(pending[0].id), directory=scep.server.dir)
        out, err = poller.communicate(timeout=90)
    finally:
        if poller.poll() is None:
            poller.kill()
    assert poller.returncode == 0, out + err
    cert = x509.load_pem_x509_certificate(out.encode())
    assert cert.subject.rfc4514_string() == "CN=gw7.example.test"
