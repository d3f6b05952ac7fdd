"""Test CSRs made with cryptography (client-side key material lives only in the test)."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "ed25519")


def make_key(kind: str):  # type: ignore[no-untyped-def]
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(65537, int(kind.split("-")[1]))


def make_csr(key, sans: list[x509.GeneralName], cn: str = "test", hash_alg=None) -> bytes:  # type: ignore[no-untyped-def]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    alg = None if isinstance(key, ed25519.Ed25519PrivateKey) else hash_alg or hashes.SHA256()
    return builder.sign(key, alg).public_bytes(serialization.Encoding.PEM)


SANS_FOR_PROFILE = {
    "machine": [x509.DNSName("host1.example.test"), x509.IPAddress(ipaddress.ip_address("192.0.2.10"))],
    "user": [x509.RFC822Name("alice@example.test")],
    "gateway": [x509.DNSName("gw.example.test"), x509.IPAddress(ipaddress.ip_address("192.0.2.1"))],
}
