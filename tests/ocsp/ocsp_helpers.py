"""Helpers for the OCSP/CRL tests: certificates issued and revoked in-process through the core
(the session deployment), served by the real ``ikepki serve`` over that same deployment."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.csr import parse_csr
from ca.model import IssuanceRequest, Requester, RevocationReason, RevocationRequest

TESTER = Requester("cli", "tests/ocsp", "127.0.0.1")


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    """The session deployment plus files for openssl: ``chain[issuer]`` = root + issuing CA."""

    dep: Any
    url: str
    dir: Path
    counter: int = 0

    def issuer_pem(self, issuer_id: str = "ec") -> Path:
        path = self.dir / f"{issuer_id}.pem"
        path.write_bytes(pem(self.dep.issuers[issuer_id].certificate))
        return path

    def chain(self, issuer_id: str = "ec") -> Path:
        path = self.dir / f"chain-{issuer_id}.pem"
        path.write_bytes(pem(self.dep.root) + pem(self.dep.issuers[issuer_id].certificate))
        return path

    def root_pem(self) -> Path:
        path = self.dir / "root.pem"
        path.write_bytes(pem(self.dep.root))
        return path

    def issue(self, name: str | None = None, profile: str = "machine") -> tuple[x509.Certificate, Path]:
        """A new machine certificate from the ec issuing CA; returns it and its PEM file."""
        self.counter += 1
        name = name or f"h{self.counter}-{time.time_ns()}.ocsp.example.test"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, hashes.SHA256()))
        issued = self.dep.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(serialization.Encoding.DER)),
                                                          profile, TESTER))
        path = self.dir / f"{issued.info.serial_hex}.pem"
        path.write_bytes(pem(issued.certificate))
        (self.dir / f"{issued.info.serial_hex}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return issued.certificate, path

    def issue_from(self, issuer_id: str) -> tuple[x509.Certificate, Path]:
        """A certificate from another issuing CA (rsa, attestation) through the core's service path."""
        from ca.deployment import issue_service_cert
        from ca.keys.signer import SigningKey

        key = ec.generate_private_key(ec.SECP256R1())
        issued = issue_service_cert(self.dep, "push-signer", issuer_id, SigningKey("software:test", key),
                                    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"t-{time.time_ns()}")]),
                                    TESTER)
        path = self.dir / f"{issued.info.serial_hex}.pem"
        path.write_bytes(pem(issued.certificate))
        return issued.certificate, path

    def revoke(self, cert: x509.Certificate, reason: RevocationReason = RevocationReason.keyCompromise) -> None:
        done = self.dep.authority.revoke(RevocationRequest((cert.serial_number,), reason, TESTER))
        assert len(done) == 1

    def release(self, cert: x509.Certificate) -> None:
        self.dep.authority.release_hold(cert.serial_number, TESTER)


def openssl(*args: str | Path, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60, input=input, check=False)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                      proc.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed:\n{out.stdout}\n{out.stderr}")
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until ``predicate`` returns something other than None/False (a wait, not a timing
    assertion; an empty CRL object is falsy but a valid result)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def fetch_crl(url: str, name: str) -> x509.CertificateRevocationList | None:
    r = httpx.get(f"{url}/crl/{name}", timeout=30)
    if r.status_code != 200:
        return None
    return x509.load_der_x509_crl(r.content)
