"""EST wire format (RFC 7030 §4, as clarified by RFC 8951): pure encode/decode helpers.

- Requests (§4.2.1): ``application/pkcs10``, base64 of the DER CSR. RFC 8951 §3: the
  Content-Transfer-Encoding header is not used; we ignore it and accept base64 with or without
  line breaks, PEM, and (leniently) raw DER.
- Responses (§4.1.3, §4.2.3): ``application/pkcs7-mime; smime-type=certs-only``: a degenerate
  CMS SignedData (RFC 5652 §5, no signers) as **single-line** base64: strongSwan ``pki`` 5.9.8
  cannot parse line-wrapped base64.
- ``application/csrattrs`` (§4.5.2) and the serverkeygen ``multipart/mixed`` answer (§4.4.2).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.der import certs_only as der_certs_only
from ca.errors import ErrorKind, PKIError

PKCS10 = "application/pkcs10"
PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
PKCS8 = "application/pkcs8"
CSRATTRS = "application/csrattrs"
MAX_CSR_DER = 16 * 1024
MAX_HEADER_CERT = 16 * 1024

OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
OID_SUBJECT_ALT_NAME = "2.5.29.17"
CURVE_OIDS = {"secp256r1": "1.2.840.10045.3.1.7", "secp384r1": "1.3.132.0.34"}


def media_type(header: str | None) -> str:
    """The bare media type, lower case (``application/pkcs10; charset=x`` -> ``application/pkcs10``)."""
    return (header or "").split(";", 1)[0].strip().lower()


def require_pkcs10(content_type: str | None) -> None:
    if media_type(content_type) != PKCS10:
        raise PKIError(ErrorKind.BAD_REQUEST, f"Content-Type must be {PKCS10} (RFC 7030 §4.2.1), "
                                              f"got {media_type(content_type) or 'none'!r}")


def decode_pkcs10_body(body: bytes) -> bytes:
    """RFC 7030 §4.2.1 / RFC 8951 §3: the base64-encoded DER of a CSR, returned as DER.

    Only the shape is decoded here (base64, PEM armour, whitespace); ``ca.csr.parse_csr``
    then checks that it is a valid, correctly signed PKCS#10 request."""
    text = body.strip()
    if not text:
        raise PKIError(ErrorKind.BAD_REQUEST, "empty request body: expected a base64 PKCS#10 request")
    if text.startswith(b"-----BEGIN"):
        text = b"".join(ln for ln in text.splitlines() if not ln.strip().startswith(b"-----"))
    compact = b"".join(text.split())
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        if body[:1] == b"\x30":  # lenient: a client that sent binary DER
            der = body
        else:
            raise PKIError(ErrorKind.BAD_REQUEST, "request body is not base64 (RFC 8951 §3)") from None
    if not der or der[:1] != b"\x30":
        raise PKIError(ErrorKind.BAD_REQUEST, "request body does not decode to a DER PKCS#10 request")
    if len(der) > MAX_CSR_DER:
        raise PKIError(ErrorKind.BAD_REQUEST, f"CSR larger than {MAX_CSR_DER} bytes")
    return der


def b64_line(der: bytes) -> bytes:
    """Single-line base64 (no line breaks; strongSwan pki 5.9.8 needs this)."""
    return base64.b64encode(der)



def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """RFC 5652 §5 degenerate SignedData carrying only certificates (RFC 7030 §4.1.3), DER
    (:func:`ca.der.certs_only`: a fixed frame around the DER-sorted certificates; byte-identical to the
    asn1crypto ``cms`` encoding, which the tests check, at a fraction of the cost)."""
    return der_certs_only([c.public_bytes(Encoding.DER) for c in certificates])


def certs_only_asn1crypto(certificates: Sequence[x509.Certificate]) -> bytes:
    """Reference encoding with asn1crypto ``cms`` (used by the tests to check :func:`certs_only`)."""
    signed = cms.SignedData({
        "version": "v1",
        "digest_algorithms": cms.DigestAlgorithms([]),
        "encap_content_info": cms.ContentInfo({"content_type": "data"}),
        "certificates": cms.CertificateSet([
            cms.CertificateChoices(name="certificate",
                                   value=asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)))
            for c in certificates]),
        "signer_infos": cms.SignerInfos([]),
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


def certs_from_certs_only(der: bytes) -> list[x509.Certificate]:
    """Inverse of :func:`certs_only` (used by tests and the bench client)."""
    info = cms.ContentInfo.load(der)
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in info["content"]["certificates"]]


class _AnySet(core.SetOf):
    _child_spec = core.Any


class _Attribute(core.Sequence):
    _fields = [("type", core.ObjectIdentifier), ("values", _AnySet)]


class _GenericCsrAttrs(core.SequenceOf):
    _child_spec = core.Any


def csr_attributes(curve: str | None, san_required: bool) -> bytes:
    """RFC 7030 §4.5.2 CsrAttrs: the signature algorithm, the key type (as in the RFC's example
    ``id-ecPublicKey {secp256r1}``), and subjectAltName when the profile requires SANs."""
    items: list[core.Asn1Value] = [core.ObjectIdentifier(OID_ECDSA_SHA256)]
    if curve:
        items.append(_Attribute({"type": OID_EC_PUBLIC_KEY,
                                 "values": [core.Any.load(core.ObjectIdentifier(CURVE_OIDS[curve]).dump())]}))
    if san_required:
        items.append(core.ObjectIdentifier(OID_SUBJECT_ALT_NAME))
    return _GenericCsrAttrs([core.Any.load(i.dump()) for i in items]).dump()


@dataclass(frozen=True)
class MultipartPart:
    content_type: str
    body: bytes


def multipart_mixed(parts: Sequence[MultipartPart]) -> tuple[str, bytes]:
    """RFC 2046 multipart/mixed with base64 parts (RFC 7030 §4.4.2); returns (content type, body)."""
    boundary = "est-" + secrets.token_hex(12)
    out = b""
    for part in parts:
        out += (f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n").encode() + part.body + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/mixed; boundary={boundary}", out


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic …`` (RFC 7617) -> (user, password); None when absent or not Basic."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise PKIError(ErrorKind.UNAUTHORIZED, "malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user or len(user) > 255 or len(password) > 1024:
        raise PKIError(ErrorKind.UNAUTHORIZED, "malformed Basic credentials")
    return user, password


def cert_from_proxy_header(value: str) -> x509.Certificate:
    """The client certificate an ingress forwards (ingress-nginx: URL-encoded PEM)."""
    if len(value) > MAX_HEADER_CERT:
        raise PKIError(ErrorKind.BAD_REQUEST, "forwarded client certificate too large")
    pem = urllib.parse.unquote(value.strip()).encode()
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise PKIError(ErrorKind.BAD_REQUEST, "forwarded client certificate is not a PEM certificate") from None
