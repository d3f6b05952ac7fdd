"""certbot (an independent client) against ikepki's ACME server: standalone http-01, --csr, revoke."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from acme_helpers import AcmeServer, Eab, verify_certificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.interop
CERTBOT = str(Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[2] / ".venv")) / "bin" / "certbot")


def certbot(acme: AcmeServer, state: Path, eab: Eab, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [CERTBOT, *args, "--non-interactive", "--agree-tos", "-m", "admin@example.test", "--no-eff-email",
           "--server", acme.directory, "--eab-kid", eab.kid, "--eab-hmac-key", eab.hmac_key,
           "--config-dir", str(state / "conf"), "--work-dir", str(state / "work"), "--logs-dir", str(state / "logs")]
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(acme.root_pem)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (state / "logs" / "letsencrypt.log").read_text()
    return proc


def standalone(acme: AcmeServer, state: Path, eab: Eab, *names: str, extra: tuple[str, ...] = ()) -> Path:
    domains = [*extra, *(a for n in names for a in ("-d", n))]
    certbot(acme, state, eab, "certonly", "--standalone", "--http-01-address", "127.0.0.1", "--http-01-port",
            str(acme.http01_port), "--preferred-challenges", "http-01", "--key-type", "ecdsa",
            "--elliptic-curve", "secp256r1", *domains)
    return state / "conf" / "live" / names[0]


def test_certbot_standalone_http01_issue_and_revoke(acme: AcmeServer, tmp_path: Path) -> None:
    eab = acme.eab("machine", "*.test")
    live = standalone(acme, tmp_path, eab, "cb1.test", "cb1-alt.test")
    fullchain = (live / "fullchain.pem").read_bytes()
    cert = verify_certificate(fullchain, acme, tmp_path, {"cb1.test", "cb1-alt.test"})
    assert fullchain.count(b"BEGIN CERTIFICATE") == 2  # leaf + issuing CA (RFC 8555 §9.1)

    certbot(acme, tmp_path, eab, "revoke", "--cert-path", str(live / "cert.pem"), "--reason", "keycompromise",
            "--no-delete-after-revoke")
    with acme.client() as http:
        body = http.get(f"{acme.server.https_url}/ca/root.pem")  # the listener still answers
        assert body.status_code == 200
    import sqlite3
    with sqlite3.connect(acme.dir / "ikepki.db") as db:
        row = db.execute("SELECT status, revocation_reason, channel FROM certificates WHERE serial = ?",
                         (format(cert.serial_number, "x"),)).fetchone()
    assert row == ("revoked", "keyCompromise", "acme")


def test_certbot_with_external_csr(acme: AcmeServer, tmp_path: Path) -> None:
    eab = acme.eab("machine", "csr.test")
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("csr.test")]), critical=False)
           .sign(key, hashes.SHA384()))
    csr_path = tmp_path / "ext.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = tmp_path / "out"
    out.mkdir()
    certbot(acme, tmp_path, eab, "certonly", "--standalone", "--http-01-address", "127.0.0.1",
            "--http-01-port", str(acme.http01_port), "--preferred-challenges", "http-01", "--csr", str(csr_path),
            "--cert-path", str(out / "cert.pem"), "--fullchain-path", str(out / "fullchain.pem"),
            "--chain-path", str(out / "chain.pem"))
    cert = verify_certificate((out / "fullchain.pem").read_bytes(), acme, tmp_path, {"csr.test"})
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_certbot_gateway_profile_from_eab_policy(acme: AcmeServer, tmp_path: Path) -> None:
    """The EAB key binds the account to the gateway profile, which certbot requires by name
    (draft-aaron-acme-profiles): serverAuth appears, 30-day lifetime."""
    eab = acme.eab("gateway", "*.gw.test")
    live = standalone(acme, tmp_path, eab, "vpn1.gw.test", extra=("--required-profile", "gateway"))
    verify_certificate((live / "fullchain.pem").read_bytes(), acme, tmp_path, {"vpn1.gw.test"}, profile="gateway")
