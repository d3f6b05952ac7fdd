"""Helpers for the EST tests: keys/CSRs, EST HTTP calls, reading the store from outside."""

from __future__ import annotations

import base64
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enrollment.est.wire import certs_from_certs_only

PKCS10 = "application/pkcs10"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, cn: str, sans: list[str] | None = None,
             serial_number: str | None = None) -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial_number:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        names: list[x509.GeneralName] = []
        for s in sans:
            kind, _, value = s.partition(":")
            names.append(x509.RFC822Name(value) if kind == "email" else x509.DNSName(value))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def b64(der: bytes) -> bytes:
    return base64.b64encode(der)


def enroll(client: httpx.Client, base: str, csr_der: bytes, *, auth: tuple[str, str] | None = None,
           label: str | None = None, op: str = "simpleenroll", body: bytes | None = None,
           headers: dict[str, str] | None = None) -> httpx.Response:
    path = f"/.well-known/est/{label}/{op}" if label else f"/.well-known/est/{op}"
    hdrs = {"Content-Type": PKCS10, **(headers or {})}
    return client.post(base + path, content=b64(csr_der) if body is None else body, auth=auth, headers=hdrs)


def issued_cert(response: httpx.Response) -> x509.Certificate:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/pkcs7-mime")
    assert b"\n" not in response.content.strip(), "certs-only must be single-line base64"
    (cert,) = certs_from_certs_only(base64.b64decode(response.content))
    return cert


def san_values(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in ext}


@dataclass
class StoreView:
    """Reads the deployment's SQLite store from outside the server (no HSM needed)."""

    db: Path

    def _one(self, sql: str, *args: object) -> object:
        with sqlite3.connect(self.db, timeout=30) as conn:
            return conn.execute(sql, args).fetchone()

    def cert_count(self) -> int:
        return int(self._one("SELECT count(*) FROM certificates")[0])  # type: ignore[index]

    def registration(self, device_id: str) -> tuple[int, str | None] | None:
        row = self._one("SELECT used, serial FROM est_registrations WHERE device_id = ?", device_id)
        return (int(row[0]), row[1]) if row else None  # type: ignore[index]

    def device_of(self, serial: int) -> str | None:
        row = self._one("SELECT device_id FROM certificates WHERE serial = ?", format(serial, "x"))
        return row[0] if row else None  # type: ignore[index]


def write_pem(path: Path, key: ec.EllipticCurvePrivateKey | None = None,
              certs: list[x509.Certificate] | None = None) -> Path:
    data = b""
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    for c in certs or []:
        data += c.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    return path
