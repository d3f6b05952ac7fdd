"""Test PKI for the responder tests: roots, gateway and client certificates made with cryptography."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.revocation_event import PUSH_SIGNER_EKU
from gateway.certs import IPSEC_IKE_EKU

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
NOW = datetime.now(UTC)
STAFF_POLICY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Key

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def serial_hex(self) -> str:
        return format(self.cert.serial_number, "x")


def _sign_alg(key: Key) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_root(cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ikepki test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def make_leaf(issuer: Issued, cn: str, *, email: str | None = None, dns: str | None = None,
              ekus: tuple[x509.ObjectIdentifier, ...] = (IPSEC_IKE_EKU,), ou: str | None = None,
              key: Key | None = None, expired: bool = False, policies: tuple[x509.ObjectIdentifier, ...] = (),
              ocsp_url: str | None = None, ip: str | None = None) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ikepki test")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    start, end = (NOW - timedelta(days=10), NOW - timedelta(days=1)) if expired else (
        NOW - timedelta(hours=1), NOW + timedelta(days=5))
    sans: list[x509.GeneralName] = []
    if email:
        sans.append(x509.RFC822Name(email))
    if dns:
        sans.append(x509.DNSName(dns))
    if ip:
        sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(issuer.cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),  # type: ignore[arg-type]
                        critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if policies:
        b = b.add_extension(x509.CertificatePolicies([x509.PolicyInformation(p, None) for p in policies]),
                            critical=False)
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return Issued(b.sign(issuer.key, _sign_alg(issuer.key)), key)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GwPki:
    root: Issued
    foreign: Issued
    gateway: Issued
    push_signer: Issued
    clients: dict[str, Issued]

    def write(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        (d / "root.pem").write_bytes(self.root.cert_pem())
        (d / "gw.pem").write_bytes(self.gateway.cert_pem() + self.root.cert_pem())
        (d / "gw.key").write_bytes(self.gateway.key_pem())


def build_pki(ocsp_url: str | None = None) -> GwPki:
    root, foreign = make_root("ikepki test root"), make_root("foreign root")
    gw = make_leaf(root, "gw.example.test", dns="gw.example.test",
                   ekus=(IPSEC_IKE_EKU, ExtendedKeyUsageOID.SERVER_AUTH))
    push = make_leaf(root, "push signer", ekus=(PUSH_SIGNER_EKU,))
    staff = (STAFF_POLICY_OID,)
    clients = {
        "alice": make_leaf(root, "alice", email="alice@example.test", ou="staff", policies=staff),
        "bob": make_leaf(root, "bob", email="bob@example.test", ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,),
                         ou="guests"),
        "carol": make_leaf(root, "carol", email="carol@example.test", ou="staff", policies=staff),
        "dave": make_leaf(root, "dave", dns="dave.example.test", ou="staff", policies=staff,
                          key=ed25519.Ed25519PrivateKey.generate()),
        "erin": make_leaf(root, "erin", email="erin@example.test", ou="staff", policies=staff,
                          key=ec.generate_private_key(ec.SECP384R1())),
        "frank": make_leaf(root, "frank", email="frank@example.test", ou="staff", policies=staff,
                           key=rsa.generate_private_key(65537, 2048)),
        "gina": make_leaf(root, "gina", email="gina@example.test", ou="staff", policies=staff,
                          key=ec.generate_private_key(ec.SECP521R1())),
        "ivan": make_leaf(root, "ivan", ip="127.0.0.1", ou="staff", policies=staff),
        "mallory": make_leaf(foreign, "mallory", email="mallory@example.test", ou="staff"),
        "olga": make_leaf(root, "olga", email="olga@example.test", ou="staff", expired=True),
        "walt": make_leaf(root, "walt", email="walt@example.test", ou="staff",
                          ekus=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        "rita": make_leaf(root, "rita", email="rita@example.test", ou="staff", ocsp_url=ocsp_url),
    }
    return GwPki(root, foreign, gw, push, clients)
