"""A small SCEP requester for negative tests and the benchmark (the interop proof is strongSwan
``pki`` and micromdm ``scepclient``; this one can also build broken messages on purpose)."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from enrollment.scep import cms

ALL_CIPHERS = frozenset({"aes128_cbc", "aes192_cbc", "aes256_cbc", cms.DES3, cms.DES})


def same_key(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(key: rsa.RSAPrivateKey, cn: str = "SCEP requester") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))


def make_csr(key: rsa.RSAPrivateKey, cn: str, password: str | None, sans: tuple[str, ...] = ()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                   x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    if password is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, password.encode())
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def issuer_and_serial(issuer: x509.Name, serial: int) -> bytes:
    return bytes(asn1_cms.IssuerAndSerialNumber({"issuer": asn1_x509.Name.load(issuer.public_bytes()),
                                                 "serial_number": serial}).dump())


def issuer_and_subject(issuer: x509.Name, subject: x509.Name) -> bytes:
    """IssuerAndSubject ::= SEQUENCE { issuer Name, subject Name } (RFC 8894 §3.3.3)."""
    body = issuer.public_bytes() + subject.public_bytes()
    return b"\x30" + _len(len(body)) + body


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


@dataclass
class Requester:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    transaction_id: str = field(default_factory=lambda: hashlib.sha256(os.urandom(16)).hexdigest().upper())
    last_nonce: bytes = b""

    @classmethod
    def new(cls, key: rsa.RSAPrivateKey | None = None) -> Requester:
        key = key or new_key()
        return cls(key, self_signed(key))

    def message(self, message_type: str, data: bytes, ra: x509.Certificate, *, cipher: str = "aes256_cbc",
                digest: str = "sha256", signing_time: datetime | None = None, nonce: bytes | None = None,
                corrupt_key: bool = False) -> bytes:
        """A pkiMessage (RFC 8894 §3.2): ``data`` enveloped to ``ra``, signed by this requester."""
        enveloped = cms.envelope(data, ra, cipher)
        if corrupt_key:  # a random wrapped content-encryption key (bad PKCS#1 padding)
            info = asn1_cms.ContentInfo.load(enveloped)
            ktri = info["content"]["recipient_infos"][0].chosen
            ktri["encrypted_key"] = os.urandom(len(ktri["encrypted_key"].native))
            enveloped = info.dump(force=True)
        self.last_nonce = nonce or os.urandom(16)
        signer = cms.Signer(self.cert, lambda payload, h: self.key.sign(payload, padding.PKCS1v15(), h))
        attrs = [(cms.OID_MESSAGE_TYPE, cms.printable(message_type)),
                 (cms.OID_TRANSACTION_ID, cms.printable(self.transaction_id)),
                 (cms.OID_SENDER_NONCE, cms.octet_string(self.last_nonce))]
        return cms.signed_data(signer, enveloped, attrs, digest, signing_time)


@dataclass(frozen=True)
class CertRep:
    status: str
    fail_info: str | None
    transaction_id: str
    recipient_nonce: bytes | None
    certificates: list[x509.Certificate]
    signer: x509.Certificate
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)


def read_certrep(body: bytes, requester: Requester) -> CertRep:
    """Parse and verify a CertRep; decrypt the certificates on SUCCESS."""
    msg = cms.parse_signed(body)
    signer = msg.verify()
    sd = asn1_cms.ContentInfo.load(body)["content"]
    attrs = sd["signer_infos"][0]["signed_attrs"]
    status = cms._printable(attrs, cms.OID_PKI_STATUS, 4)
    fail = cms._printable(attrs, cms.OID_FAIL_INFO, 4)
    recipient_nonce = cms._octet_attr(attrs, cms.OID_RECIPIENT_NONCE, 64)
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    if status == "0" and msg.content:
        opened = cms.open_envelope(msg.content, requester.cert,
                                   lambda k: requester.key.decrypt(k, padding.PKCS1v15()), ALL_CIPHERS)
        certs = read_degenerate(opened.data)
        crls = read_degenerate_crls(opened.data)
    assert status is not None
    return CertRep(status, fail, msg.transaction_id, recipient_nonce, certs, signer, crls)


def read_degenerate(data: bytes) -> list[x509.Certificate]:
    sd = asn1_cms.ContentInfo.load(data)["content"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in (sd["certificates"] or [])]


def read_degenerate_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    sd = asn1_cms.ContentInfo.load(data)["content"]
    return [x509.load_der_x509_crl(c.chosen.dump()) for c in (sd["crls"] or [])]


class ScepHttp:
    def __init__(self, url: str, client: httpx.Client | None = None) -> None:
        self.url = url
        self.client = client or httpx.Client(timeout=30)

    def get(self, operation: str, message: str | None = None) -> httpx.Response:
        params = {"operation": operation}
        if message is not None:
            params["message"] = message
        return self.client.get(self.url, params=params)

    def post(self, body: bytes) -> httpx.Response:
        return self.client.post(self.url, params={"operation": "PKIOperation"}, content=body,
                                headers={"content-type": "application/x-pki-message"})

    def get_pki(self, body: bytes) -> httpx.Response:
        return self.get("PKIOperation", base64.b64encode(body).decode())

    def ca_certs(self) -> list[x509.Certificate]:
        return read_degenerate(self.get("GetCACert").content)

    def ra(self) -> x509.Certificate:
        return next(c for c in self.ca_certs() if not _is_ca(c))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_signed_data(body: bytes) -> tuple[x509.Certificate, bytes]:
    """Verify a SignedData without SCEP attributes (GetNextCACert); return (signer, content)."""
    sd = asn1_cms.ContentInfo.load(body)["content"]
    si = sd["signer_infos"][0]
    content = bytes(sd["encap_content_info"]["content"].native)
    signer_der = cms._find_signer(sd, si)
    cms._verify_signer(si, si["signed_attrs"], signer_der, si["digest_algorithm"]["algorithm"].native, content)
    assert signer_der is not None
    return x509.load_der_x509_certificate(signer_der), content
