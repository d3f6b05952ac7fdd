"""Bad requests get one readable error line, a non-zero documented exit code, and no row."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.conftest import run_ikepki
from tests.core.csr_factory import SANS_FOR_PROFILE, make_csr, make_key


def _count(directory: Path) -> int:
    import sqlite3

    with sqlite3.connect(directory / "ikepki.db") as db:
        return int(db.execute("select count(*) from certificates").fetchone()[0])


def _broken_signature() -> bytes:
    der = bytearray(x509.load_pem_x509_csr(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]))
                    .public_bytes(serialization.Encoding.DER))
    at = der.index(b"host1.example.test")  # tamper with the signed SAN: structure intact, signature wrong
    der[at] = ord("H")
    return bytes(der)


def _rsa1024() -> bytes:
    # cryptography refuses to generate <1024-bit keys, 1024 is the classic weak case
    key = rsa.generate_private_key(65537, 1024)
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("weak.example.test")]), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def _sha1_signed() -> bytes:
    # cryptography refuses to sign with SHA-1; OpenSSL still does
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha1", "-keyout", f"{tmp}/k",
                        "-subj", "/CN=sha1.example.test", "-addext", "subjectAltName=DNS:sha1.example.test",
                        "-out", f"{tmp}/r"], check=True, capture_output=True)
        return Path(f"{tmp}/r").read_bytes()


CASES = {
    "csr-bad-signature.der": (_broken_signature, "machine", "signature"),
    "csr-rsa1024.pem": (_rsa1024, "machine", "too weak"),
    "csr-sha1.pem": (_sha1_signed, "machine", "SHA1"),
    "csr-forbidden-san.pem": (lambda: make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["user"]), "machine", "email"),
    "csr-garbage.bin": (lambda: b"\x00garbage\xff" * 50, "machine", "neither DER"),
    "csr-empty.pem": (lambda: b"", "machine", ""),
    "csr-unknown-profile.pem": (lambda: make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]), "nosuch",
                                "unknown certificate profile"),
    "csr-internal-profile.pem": (lambda: make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]), "ocsp-signer",
                                 "unknown certificate profile"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_csr_is_refused_without_a_row(deployment_dir: Path, tmp_path: Path, name: str) -> None:
    make, profile, needle = CASES[name]
    path = tmp_path / name
    path.write_bytes(make())
    before = _count(deployment_dir)
    proc = run_ikepki("issue", "--csr", str(path), "--profile", profile, directory=deployment_dir, check=False)
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in proc.stderr
    assert _count(deployment_dir) == before


def test_missing_csr_file_is_a_usage_error(deployment_dir: Path, tmp_path: Path) -> None:
    proc = run_ikepki("issue", "--csr", str(tmp_path / "nope.pem"), "--profile", "machine", directory=deployment_dir,
                      check=False)
    assert proc.returncode == 2 and "file not found" in proc.stderr


def test_init_refuses_to_overwrite_a_ca(deployment_dir: Path) -> None:
    root_before = (deployment_dir / "root-ca.pem").read_bytes()
    proc = run_ikepki("init", directory=deployment_dir, check=False)
    assert proc.returncode == 4 and "--force" in proc.stderr
    assert (deployment_dir / "root-ca.pem").read_bytes() == root_before


def test_invalid_setting_fails_closed(deployment_dir: Path) -> None:
    proc = run_ikepki("certs", "list", directory=deployment_dir, check=False, env={"IKEPKI_HTTPS_PORT": "many"})
    assert proc.returncode == 2 and "https_port" in proc.stderr


@pytest.mark.parametrize("content", ["", "  \n", "two words\n"])
def test_unusable_admin_token_file_is_a_usage_error(deployment_dir: Path, tmp_path: Path, content: str) -> None:
    """Issue 21 defect 11: an empty --token file said "admin API unreachable" (exit 6, "retry")."""
    token = tmp_path / "token"
    token.write_text(content)
    proc = run_ikepki("revoke", "1f", "--reason", "keyCompromise", "--yes", "--server", "https://127.0.0.1:9",
                      "--token", str(token), directory=deployment_dir, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "token" in lines[0] and "unreachable" not in lines[0]
