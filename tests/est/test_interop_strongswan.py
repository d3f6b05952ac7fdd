"""strongSwan ``pki --estca`` / ``pki --est`` 5.9.8 against ``ikepki serve`` (an independent client).

pki speaks TLS 1.2 only and needs single-line base64 with Content-Length (clients.md)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import require_binary
from tests.est.conftest import EstEnv, load_pem_cert, pending_ids

pytestmark = pytest.mark.interop

PLUGINS = ("random nonce aes sha1 sha2 md5 pem pkcs1 pkcs7 pkcs8 pkcs12 pgp dnskey sshkey x509 pubkey revocation "
           "constraints gmp openssl curl")  # no tpm plugin: silences the libtss2 warning (clients.md)
SS_CONF = f"pki {{\n  load = {PLUGINS}\n}}\n"


def pki(tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    conf = tmp / "strongswan.conf"
    conf.write_text(SS_CONF)
    env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
    return subprocess.run([require_binary("pki"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def gen_req(tmp: Path, name: str, dn: str, san: str) -> tuple[Path, Path]:
    key = tmp / f"{name}.key"
    r = pki(tmp, "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
    assert r.returncode == 0, r.stderr
    key.write_text(r.stdout)
    r = pki(tmp, "--req", "--in", str(key), "--type", "priv", "--dn", dn, "--san", san, "--outform", "pem")
    assert r.returncode == 0, r.stderr
    req = tmp / f"{name}.csr"
    req.write_text(r.stdout)
    return key, req


def estca(tmp: Path, est: EstEnv) -> list[str]:
    out = tmp / "estca.crt"
    r = pki(tmp, "--estca", "--url", est.url, "--cacert", est.root, "--caout", str(out), "--outform", "pem")
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(str(p) for p in tmp.glob("estca*.crt"))
    assert len(files) == 2, files  # root and the issuing CA
    return files


def cacert_args(est: EstEnv, files: list[str]) -> list[str]:
    args = ["--cacert", est.root]
    for f in files:
        args += ["--cacert", f]
    return args


def test_estca_returns_root_and_issuing_ca(est: EstEnv, tmp_path: Path) -> None:
    files = estca(tmp_path, est)
    subjects = {load_pem_cert(Path(f)).subject.rfc4514_string() for f in files}
    assert any("Root CA" in s for s in subjects) and any("Issuing CA" in s for s in subjects)


def test_pki_enroll_with_secret_then_reenroll_with_client_cert(est: EstEnv, tmp_path: Path) -> None:
    files = estca(tmp_path, est)
    secret = est.register_one("ss-dev-1", ["DNS:ss-dev-1.example.test"])
    key, req = gen_req(tmp_path, "first", "O=Example, CN=ss-dev-1", "ss-dev-1.example.test")
    r = pki(tmp_path, "--est", "--url", est.url, *cacert_args(est, files), "--in", str(req),
            "--userpass", f"ss-dev-1:{secret}", "--outform", "pem")
    assert r.returncode == 0, r.stdout + r.stderr
    first_pem = tmp_path / "first.pem"
    first_pem.write_text(r.stdout)
    first = load_pem_cert(first_pem)
    assert first.subject.rfc4514_string() == "CN=ss-dev-1,O=Example"
    assert est.store.registration("ss-dev-1") == (1, format(first.serial_number, "x"))
    assert est.store.device_of(first.serial_number) == "ss-dev-1"

    # the used secret is refused
    r = pki(tmp_path, "--est", "--url", est.url, *cacert_args(est, files), "--in", str(req),
            "--userpass", f"ss-dev-1:{secret}", "--outform", "pem")
    assert r.returncode != 0 and "403" in r.stdout + r.stderr

    # simplereenroll authenticated by the current certificate (TLS client auth)
    _, req2 = gen_req(tmp_path, "second", "O=Example, CN=ss-dev-1", "ss-dev-1.example.test")
    r = pki(tmp_path, "--est", "--url", est.url, *cacert_args(est, files), "--in", str(req2),
            "--cert", str(first_pem), "--key", str(key), "--outform", "pem")
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "second.pem").write_text(r.stdout)
    second = load_pem_cert(tmp_path / "second.pem")
    assert second.serial_number != first.serial_number
    assert second.subject == first.subject
    assert est.store.device_of(second.serial_number) == "ss-dev-1"
    ext = second.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in ext] == ["ss-dev-1.example.test"]
    chain = tmp_path / "chain.pem"
    chain.write_text("".join(Path(f).read_text() for f in files))
    v = subprocess.run(["openssl", "verify", "-CAfile", est.root, "-untrusted", str(chain),
                        str(tmp_path / "second.pem")], capture_output=True, text=True, check=False)
    assert v.returncode == 0, v.stdout + v.stderr


def test_pki_reenroll_with_other_identity_is_refused(est: EstEnv, tmp_path: Path) -> None:
    files = estca(tmp_path, est)
    cert, key = est.issue(tmp_path, "ss-own", "ss-own.example.test")
    _, req = gen_req(tmp_path, "other", "O=Example, CN=ss-own", "someone-else.example.test")
    before = est.store.cert_count()
    r = pki(tmp_path, "--est", "--url", est.url, *cacert_args(est, files), "--in", str(req),
            "--cert", str(cert), "--key", str(key), "--outform", "pem")
    assert r.returncode != 0 and "403" in r.stdout + r.stderr
    assert est.store.cert_count() == before


def test_pki_polls_while_waiting_for_manual_approval(est: EstEnv, tmp_path: Path) -> None:
    """§4.2.3: 202 + Retry-After; pki re-sends until an operator runs `ikepki est approve`."""
    files = estca(tmp_path, est)
    _, req = gen_req(tmp_path, "held", "O=Example, CN=ss-held", "ss-held.example.test")
    before = set(pending_ids(est))
    result: dict[str, subprocess.CompletedProcess[str]] = {}

    def run() -> None:  # the proxied server's default label is "approval" (pki cannot name a label)
        result["r"] = pki(tmp_path, "--est", "--url", est.proxied.https_url, *cacert_args(est, files),
                          "--in", str(req), "--userpass", "intune:intune-pipeline-pw", "--interval", "1",
                          "--maxpolltime", "60", "--outform", "pem", timeout=90)

    t = threading.Thread(target=run)
    t.start()
    new: list[str] = []
    deadline = time.monotonic() + 30
    while not new and time.monotonic() < deadline:
        time.sleep(0.3)
        new = [p for p in pending_ids(est) if p not in before]
        if "r" in result:
            break
    assert new, result.get("r")
    est.decide(new[0])
    t.join(90)
    r = result["r"]
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "held.pem").write_text(r.stdout)
    assert load_pem_cert(tmp_path / "held.pem").subject.rfc4514_string() == "CN=ss-held,O=Example"
