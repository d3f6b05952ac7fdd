"""CMS for SCEP (RFC 8894 §3 on RFC 5652): read a signed pkiMessage, open its pkcsPKIEnvelope,
and build CertRep messages, envelopes and degenerate certificates-only SignedData.

asn1crypto does the structure, cryptography the primitives. Every decoding failure is a
:class:`CmsError` carrying the SCEP failInfo it maps to; nothing here touches the store.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

from ca.der import certs_only, der_tlv
from enrollment.scep.messages import FailInfo

# RFC 8894 §3.2.1 attribute OIDs (id-attributes under VeriSign's arc)
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"

MAX_TRANSACTION_ID = 128
MAX_NONCE = 64
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256,
                                                 "sha384": hashes.SHA384, "sha512": hashes.SHA512}
# content-encryption algorithm -> (cipher factory, key length in bytes, block size in bytes)
_AES = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}
DES3, DES = "tripledes_3key", "des"


class CmsError(Exception):
    """A message that cannot be processed; ``fail_info`` is what a CertRep FAILURE carries."""

    def __init__(self, fail_info: FailInfo, detail: str) -> None:
        super().__init__(detail)
        self.fail_info = fail_info
        self.detail = detail


class NotScepMessage(Exception):
    """The body is not a signed pkiMessage at all: answer HTTP 400."""


@dataclass(frozen=True)
class SignedMessage:
    """The parts of a pkiMessage (RFC 8894 §3.2) the server needs; signature not yet checked."""

    message_type: str
    transaction_id: str
    sender_nonce: bytes
    signer_der: bytes | None
    digest_algorithm: str
    content: bytes | None  # the pkcsPKIEnvelope (DER of a ContentInfo), absent for some replies
    signing_time: datetime | None
    _verify: Callable[[], None]

    def verify(self) -> x509.Certificate:
        """Check messageDigest and the signature; return the signer certificate (RFC 5652 §5.4, §5.6)."""
        self._verify()
        assert self.signer_der is not None
        return x509.load_der_x509_certificate(self.signer_der)


@dataclass(frozen=True)
class Envelope:
    """A decrypted pkcsPKIEnvelope: the messageData and the content-encryption algorithm used."""

    data: bytes
    cipher: str


# -- helpers ------------------------------------------------------------------------------------


def octets(value: core.Asn1Value) -> bytes:
    """Contents of an OCTET STRING, primitive or BER-constructed."""
    return _octet_contents(value.method, bytes(value.contents))


def _octet_contents(method: int, data: bytes) -> bytes:
    """Primitive contents as they are; constructed ones (micromdm scepclient sends the
    encryptedContent that way) are the concatenation of their primitive segments."""
    if method == 0:
        return data
    out, pointer = [], 0
    while pointer < len(data):
        class_, seg_method, tag, _header, contents, pointer = _parseder_tlv(data, pointer)
        if class_ != 0 or tag != 4 or seg_method != 0:
            raise ValueError("constructed OCTET STRING segments must be primitive OCTET STRINGs")
        out.append(contents)
    return b"".join(out)


def _encrypted_content(eci: cms.EncryptedContentInfo) -> bytes:
    """``[0] IMPLICIT OCTET STRING`` of an EncryptedContentInfo, read from the raw TLVs: asn1crypto
    refuses the constructed (BER) form micromdm scepclient sends."""
    data, pointer = bytes(eci.contents), 0
    while pointer < len(data):
        class_, method, tag, _header, contents, pointer = _parseder_tlv(data, pointer)
        if class_ == 2 and tag == 0:
            return _octet_contents(method, contents)
    raise ValueError("EncryptedContentInfo has no encryptedContent")


def _parseder_tlv(data: bytes, pointer: int) -> tuple[int, int, int, bytes, bytes, int]:
    info, new_pointer = parser._parse(data, len(data), pointer)
    class_, method, tag, header, contents, _trailer = info
    return class_, method, tag, header, contents, new_pointer


def _attr_value(attrs: cms.CMSAttributes, oid: str) -> core.Asn1Value | None:
    found = [a for a in attrs if a["type"].dotted == oid]
    if not found:
        return None
    if len(found) > 1 or len(found[0]["values"]) != 1:
        raise CmsError(FailInfo.badRequest, f"attribute {oid} must occur once with one value")
    return found[0]["values"][0]


def _printable(attrs: cms.CMSAttributes, oid: str, limit: int) -> str | None:
    value = _attr_value(attrs, oid)
    if value is None:
        return None
    text = core.PrintableString.load(value.dump()).native
    if not isinstance(text, str) or len(text) > limit:
        raise CmsError(FailInfo.badRequest, f"attribute {oid} is too long")
    return text


def _octet_attr(attrs: cms.CMSAttributes, oid: str, limit: int) -> bytes | None:
    value = _attr_value(attrs, oid)
    if value is None:
        return None
    data = core.OctetString.load(value.dump()).native
    if not isinstance(data, bytes) or len(data) > limit:
        raise CmsError(FailInfo.badRequest, f"attribute {oid} is too long")
    return data


def _digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


# -- reading a pkiMessage ---------------------------------------------------------------------


def parse_signed(body: bytes, now: datetime | None = None) -> SignedMessage:
    """Decode the outer SignedData (RFC 8894 §3.2). Raises :class:`NotScepMessage` when there is
    no SignerInfo with the SCEP attributes to answer to."""
    try:
        info = cms.ContentInfo.load(body)
        if info["content_type"].native != "signed_data":
            raise NotScepMessage("not a CMS SignedData")
        sd = info["content"]
        signers = sd["signer_infos"]
        if len(signers) != 1:
            raise NotScepMessage("a pkiMessage has exactly one signer")
        si = signers[0]
        attrs = si["signed_attrs"]
        if not isinstance(attrs, cms.CMSAttributes) or len(attrs) == 0:
            raise NotScepMessage("the SignerInfo has no signed attributes")
        message_type = _printable(attrs, OID_MESSAGE_TYPE, 4)
        transaction_id = _printable(attrs, OID_TRANSACTION_ID, MAX_TRANSACTION_ID)
        nonce = _octet_attr(attrs, OID_SENDER_NONCE, MAX_NONCE)
        if message_type is None or transaction_id is None or nonce is None:
            raise NotScepMessage("messageType, transactionID and senderNonce are required")
        encap = sd["encap_content_info"]
        raw_content = encap["content"]
        content = None if isinstance(raw_content, core.Void) else octets(raw_content)
        digest_name = si["digest_algorithm"]["algorithm"].native
        signing_time = _attr_value(attrs, "1.2.840.113549.1.9.5")
        when = cms.Time.load(signing_time.dump()).native if signing_time is not None else None
        signer_der = _find_signer(sd, si)
    except NotScepMessage:
        raise
    except CmsError as exc:
        raise NotScepMessage(exc.detail) from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise NotScepMessage(f"malformed CMS: {exc.__class__.__name__}") from None

    def verify() -> None:
        _verify_signer(si, attrs, signer_der, digest_name, content or b"")

    return SignedMessage(message_type, transaction_id, nonce, signer_der, str(digest_name), content, when, verify)


def _find_signer(sd: cms.SignedData, si: cms.SignerInfo) -> bytes | None:
    sid = si["sid"]
    for choice in sd["certificates"] or []:
        if choice.name != "certificate":
            continue
        cert = choice.chosen
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if cert.serial_number == ias["serial_number"].native and _same_name(cert.issuer, ias["issuer"]):
                return bytes(cert.dump())
        elif sid.name == "subject_key_identifier" and cert.key_identifier == sid.chosen.native:
            return bytes(cert.dump())
    return None


def _same_name(a: asn1_x509.Name, b: asn1_x509.Name) -> bool:
    """Byte-equal DER first (the usual case, cheap), RFC 5280 §7.1 comparison otherwise."""
    return bool(a.dump() == b.dump() or a == b)


def _verify_signer(si: cms.SignerInfo, attrs: cms.CMSAttributes, signer_der: bytes | None, digest_name: str,
                   content: bytes) -> None:
    if signer_der is None:
        raise CmsError(FailInfo.badMessageCheck, "the signer certificate is not in the message")
    if digest_name not in HASHES:
        raise CmsError(FailInfo.badAlg, f"digest algorithm {digest_name} is not supported")
    md = _octet_attr(attrs, "1.2.840.113549.1.9.4", 64)
    if md is None or md != _digest(digest_name, content):
        raise CmsError(FailInfo.badMessageCheck, "messageDigest does not match the content")
    try:
        cert = x509.load_der_x509_certificate(signer_der)
        key = cert.public_key()
    except ValueError:
        raise CmsError(FailInfo.badMessageCheck, "the signer certificate cannot be read") from None
    signed = b"\x31" + bytes(attrs.dump()[1:])  # verify over the received SET OF, re-tagged from [0]
    sig_alg = si["signature_algorithm"]
    signature = bytes(si["signature"].native)
    h = HASHES[digest_name]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if sig_alg["algorithm"].native == "rsassa_pss":
                key.verify(signature, signed, asym_padding.PSS(asym_padding.MGF1(h), asym_padding.PSS.AUTO), h)
            else:
                key.verify(signature, signed, asym_padding.PKCS1v15(), h)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed, ec.ECDSA(h))
        else:
            raise CmsError(FailInfo.badAlg, "the signer key type is not supported")
    except InvalidSignature:
        raise CmsError(FailInfo.badMessageCheck, "the message signature is invalid") from None
    except (ValueError, TypeError):
        raise CmsError(FailInfo.badAlg, "the signature algorithm is not supported") from None


# -- opening the pkcsPKIEnvelope ------------------------------------------------------------


def open_envelope(envelope: bytes, ra_cert: x509.Certificate, decrypt_key: Callable[[bytes], bytes],
                  allowed_ciphers: frozenset[str]) -> Envelope:
    """Decrypt an EnvelopedData (RFC 5652 §6) addressed to the RA certificate.

    ``decrypt_key`` unwraps the content-encryption key (RSA PKCS#1 v1.5 on the HSM). Any
    unwrap or padding failure surfaces as the same badMessageCheck (no padding oracle).
    """
    try:
        info = cms.ContentInfo.load(envelope)
        if info["content_type"].native != "enveloped_data":
            raise CmsError(FailInfo.badRequest, "pkcsPKIEnvelope is not an EnvelopedData")
        ed = info["content"]
        eci = ed["encrypted_content_info"]
        alg = eci["content_encryption_algorithm"]
        cipher_name = alg["algorithm"].native
        if cipher_name not in allowed_ciphers:
            raise CmsError(FailInfo.badAlg, f"content encryption {cipher_name} is not allowed")
        iv = bytes(alg["parameters"].native)
        ciphertext = _encrypted_content(eci)
        wrapped = _recipient_key(ed["recipient_infos"], ra_cert)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError):
        raise CmsError(FailInfo.badRequest, "malformed pkcsPKIEnvelope") from None
    key_len = _AES.get(cipher_name, 24 if cipher_name == DES3 else 8)
    try:
        cek = decrypt_key(wrapped)
    except ValueError:
        cek = b""
    if len(cek) != key_len:
        cek = os.urandom(key_len)  # implicit rejection: fail later exactly like a wrong key would
    return Envelope(_decrypt(cipher_name, cek, iv, ciphertext), cipher_name)


def _recipient_key(recipients: cms.RecipientInfos, ra_cert: x509.Certificate) -> bytes:
    ra_issuer = asn1_x509.Name.load(ra_cert.issuer.public_bytes())
    for ri in recipients:
        if ri.name != "ktri":
            continue
        ktri = ri.chosen
        rid = ktri["rid"]
        if rid.name != "issuer_and_serial_number":
            continue
        ias = rid.chosen
        if ias["serial_number"].native == ra_cert.serial_number and _same_name(ias["issuer"], ra_issuer):
            if ktri["key_encryption_algorithm"]["algorithm"].native not in ("rsaes_pkcs1v15", "rsa"):
                raise CmsError(FailInfo.badAlg, "key transport must be RSA PKCS#1 v1.5")
            return bytes(ktri["encrypted_key"].native)
    raise CmsError(FailInfo.badMessageCheck, "the pkcsPKIEnvelope is not encrypted to this RA certificate")


def _cipher(name: str, key: bytes, iv: bytes) -> Cipher:  # type: ignore[type-arg]
    if name in _AES:
        return Cipher(algorithms.AES(key), modes.CBC(iv))
    if name == DES3:
        return Cipher(TripleDES(key), modes.CBC(iv))
    if name == DES:
        return Cipher(TripleDES(key * 3), modes.CBC(iv))  # DES = EDE with K1=K2=K3
    raise CmsError(FailInfo.badAlg, f"content encryption {name} is not supported")


def _decrypt(name: str, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    block = 16 if name in _AES else 8
    if len(iv) != block or not ciphertext or len(ciphertext) % block:
        raise CmsError(FailInfo.badMessageCheck, "encrypted content has a bad length or IV")
    dec = _cipher(name, key, iv).decryptor()
    padded = dec.update(ciphertext) + dec.finalize()
    unpadder = padding.PKCS7(block * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CmsError(FailInfo.badMessageCheck, "the pkcsPKIEnvelope could not be decrypted") from None


# -- building -----------------------------------------------------------------------------


# A minimal DER writer: building with asn1crypto dicts cost more than the HSM operations.

_OID_DER = {
    "data": bytes.fromhex("06092a864886f70d010701"),
    "signed_data": bytes.fromhex("06092a864886f70d010702"),
    "enveloped_data": bytes.fromhex("06092a864886f70d010703"),
    "rsa": bytes.fromhex("06092a864886f70d010101"),
    "sha1": bytes.fromhex("06052b0e03021a"),
    "sha256": bytes.fromhex("0609608648016503040201"),
    "sha384": bytes.fromhex("0609608648016503040202"),
    "sha512": bytes.fromhex("0609608648016503040203"),
    "aes128_cbc": bytes.fromhex("0609608648016503040102"),
    "aes192_cbc": bytes.fromhex("0609608648016503040116"),
    "aes256_cbc": bytes.fromhex("060960864801650304012a"),
    DES3: bytes.fromhex("06082a864886f70d0307"),
    DES: bytes.fromhex("06052b0e030207"),
}
_NULL = b"\x05\x00"



def _seq(*parts: bytes) -> bytes:
    return der_tlv(0x30, b"".join(parts))


def _set(*parts: bytes) -> bytes:
    return der_tlv(0x31, b"".join(sorted(parts)))  # DER SET OF order


def _int(value: int) -> bytes:
    return der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _alg(name: str, params: bytes = _NULL) -> bytes:
    return _seq(_OID_DER[name], params)


def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    return _seq(cert.issuer.public_bytes(), _int(cert.serial_number))


def _content_info(kind: str, content: bytes) -> bytes:
    return _seq(_OID_DER[kind], der_tlv(0xA0, content))


def degenerate(certs: Sequence[x509.Certificate], crls: Sequence[bytes] = ()) -> bytes:
    """A degenerate SignedData (RFC 8894 §3.4): no content, no signers; certificates, or for
    GetCRL (§3.3.3) the DER CRLs in the ``crls`` [1] field — both DER-sorted SET OF
    (:func:`ca.der.certs_only`, the encoder EST uses too)."""
    return certs_only([c.public_bytes(Encoding.DER) for c in certs], list(crls))


def envelope(data: bytes, recipient: x509.Certificate, cipher_name: str) -> bytes:
    """EnvelopedData (RFC 5652 §6) for ``recipient`` (RSA key transport, PKCS#1 v1.5)."""
    key = recipient.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CmsError(FailInfo.badAlg, "the requester's certificate has no RSA key to encrypt the reply to")
    key_len = _AES.get(cipher_name, 24 if cipher_name == DES3 else 8)
    block = 16 if cipher_name in _AES else 8
    cek, iv = os.urandom(key_len), os.urandom(block)
    padder = padding.PKCS7(block * 8).padder()
    enc = _cipher(cipher_name, cek, iv).encryptor()
    ciphertext = enc.update(padder.update(data) + padder.finalize()) + enc.finalize()
    ktri = _seq(_int(0), _issuer_and_serial(recipient), _alg("rsa"),
                der_tlv(0x04, key.encrypt(cek, asym_padding.PKCS1v15())))
    eci = _seq(_OID_DER["data"], _alg(cipher_name, der_tlv(0x04, iv)), der_tlv(0x80, ciphertext))
    return _content_info("enveloped_data", _seq(_int(0), _set(ktri), eci))


@dataclass(frozen=True)
class Signer:
    """The RA: its certificate and a function signing bytes with RSA PKCS#1 v1.5 and a hash."""

    certificate: x509.Certificate
    sign: Callable[[bytes, hashes.HashAlgorithm], bytes]


def _attribute(oid: str, value: bytes) -> bytes:
    return _seq(bytes(core.ObjectIdentifier(oid).dump()), _set(value))


def signed_data(signer: Signer, content: bytes | None, attributes: Sequence[tuple[str, core.Asn1Value]],
                digest_name: str = "sha256", signing_time: datetime | None = None) -> bytes:
    """A SignedData over ``content`` (id-data) with one SignerInfo whose digestEncryptionAlgorithm is
    rsaEncryption (strongSwan 5.9.8 accepts nothing else) and the given signed attributes."""
    attrs = [_attribute("1.2.840.113549.1.9.3", _OID_DER["data"]),
             _attribute("1.2.840.113549.1.9.4", der_tlv(0x04, _digest(digest_name, content or b"")))]
    if signing_time is not None:
        attrs.append(_attribute("1.2.840.113549.1.9.5", bytes(cms.Time({"utc_time": signing_time}).dump())))
    attrs += [_attribute(oid, bytes(value.dump())) for oid, value in attributes]
    signed_attrs = _set(*attrs)
    signature = signer.sign(signed_attrs, HASHES[digest_name]())
    ra = signer.certificate
    si = _seq(_int(1), _issuer_and_serial(ra), _alg(digest_name), b"\xa0" + signed_attrs[1:], _alg("rsa"),
              der_tlv(0x04, signature))
    encap = _seq(_OID_DER["data"], der_tlv(0xA0, der_tlv(0x04, content))) if content is not None \
        else _seq(_OID_DER["data"])
    sd = _seq(_int(1), _set(_alg(digest_name)), encap, der_tlv(0xA0, ra.public_bytes(Encoding.DER)), _set(si))
    return _content_info("signed_data", sd)


def printable(text: str) -> core.PrintableString:
    return core.PrintableString(text)


def octet_string(data: bytes) -> core.OctetString:
    return core.OctetString(data)
