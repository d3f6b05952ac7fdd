"""RFC 7030 §4.4.1.2 / §4.4.2: a server-generated private key encrypted to a key the client names.

The client puts an ``AsymmetricDecryptKeyIdentifier`` attribute (id-aa-asymmDecryptKeyID,
RFC 7030 §4.4.1.2) into its serverkeygen CSR: the subject key identifier (RFC 5280 §4.2.1.2
method 1) of a key it holds: its TLS client certificate's key, or the key that signed the CSR.
The answer's key part is then ``application/pkcs7-mime; smime-type=server-generated-key``:

    EnvelopedData (RFC 5652 §6; AES-256-CBC)            to the named key:
      RSA: KeyTransRecipientInfo, RSAES-OAEP-SHA256      EC: KeyAgreeRecipientInfo, RFC 5753
                                                              dhSinglePass-stdDH-sha256kdf + AES-256 wrap
      └ SignedData (RFC 5652 §5) signed by the EST server's TLS key
          └ AsymmetricKeyPackage (RFC 5958, id-ct-KP-aKeyPackage) holding the PKCS#8 key
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos, cms, core, keys
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from ca.der import der_length
from ca.errors import ErrorKind, PKIError

OID_ASYMM_DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.54"
OID_DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.37"
OID_KP_AKEYPACKAGE = "2.16.840.1.101.2.1.2.78.5"
OID_ECDH_SHA256_KDF = "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme (RFC 5753 §7.1.4)
OID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"
SERVER_GENERATED_KEY = "application/pkcs7-mime; smime-type=server-generated-key"


@dataclass(frozen=True)
class Recipient:
    key_id: bytes
    public_key: Any  # rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def subject_key_id(public_key: Any) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def requested_key_id(csr_der: bytes) -> bytes | None:
    """The AsymmetricDecryptKeyIdentifier value in the CSR, if any (§4.4.1.2)."""
    try:
        attrs = asn1_csr.CertificationRequest.load(csr_der)["certification_request_info"]["attributes"]
        for attr in attrs:
            oid = attr["type"].dotted
            if oid == OID_DECRYPT_KEY_ID:
                raise PKIError(ErrorKind.BAD_REQUEST, "symmetric DecryptKeyIdentifier is not supported; use "
                                                      "AsymmetricDecryptKeyIdentifier (RFC 7030 §4.4.1.2)")
            if oid == OID_ASYMM_DECRYPT_KEY_ID:
                values = _AnySet.load(attr["values"].dump())  # unknown attribute types parse as Any
                if len(values) != 1:
                    raise PKIError(ErrorKind.BAD_REQUEST, "AsymmetricDecryptKeyIdentifier needs exactly one value")
                value = core.OctetString.load(values[0].dump()).native
                if not value or len(value) > 64:
                    raise PKIError(ErrorKind.BAD_REQUEST, "invalid AsymmetricDecryptKeyIdentifier")
                return bytes(value)
    except PKIError:
        raise
    except (ValueError, TypeError, KeyError):
        raise PKIError(ErrorKind.BAD_REQUEST, "unreadable CSR attributes") from None
    return None


def choose_recipient(key_id: bytes, candidates: list[Any]) -> Recipient:
    for key in candidates:
        if key is not None and isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) \
                and subject_key_id(key) == key_id:
            return Recipient(key_id, key)
    raise PKIError(ErrorKind.BAD_REQUEST, "AsymmetricDecryptKeyIdentifier names neither the TLS client "
                                          "certificate's key nor the CSR's key (RSA or EC)")


def protect(pkcs8_der: bytes, recipient: Recipient, signer_key: Any, signer_chain: list[x509.Certificate]) -> bytes:
    """ContentInfo(EnvelopedData(SignedData(AsymmetricKeyPackage))) DER; the signer's chain (leaf
    first, up to the issuing CA) rides in the SignedData so a client needs only the root."""
    package = b"\x30" + der_length(len(pkcs8_der)) + pkcs8_der  # SEQUENCE OF OneAsymmetricKey
    signed = _signed(package, signer_key, signer_chain)
    return _enveloped(signed, recipient)



def _signed(content: bytes, key: Any, chain: list[x509.Certificate]) -> bytes:
    digest = hashlib.sha256(content).digest()
    attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": [OID_KP_AKEYPACKAGE]}),
        cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
    ])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256()))
        sig_alg = "sha256_ecdsa"
    else:
        signature = key.sign(attrs.dump(), asym_padding.PKCS1v15(), hashes.SHA256())
        sig_alg = "sha256_rsa"
    certs = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in chain]
    asn1_cert = certs[0]
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier(name="issuer_and_serial_number", value={
            "issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": attrs,
        "signature_algorithm": {"algorithm": sig_alg},
        "signature": signature,
    })
    signed = cms.SignedData({
        "version": "v3",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": OID_KP_AKEYPACKAGE, "content": core.ParsableOctetString(content)},
        "certificates": [cms.CertificateChoices(name="certificate", value=c) for c in certs],
        "signer_infos": [signer],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


def _enveloped(content: bytes, recipient: Recipient) -> bytes:
    cek, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    if isinstance(recipient.public_key, rsa.RSAPublicKey):
        info, version = _ktri(cek, recipient), "v2"
    else:
        info, version = _kari(cek, recipient), "v2"
    enveloped = cms.EnvelopedData({
        "version": version,
        "recipient_infos": [info],
        "encrypted_content_info": {
            "content_type": "signed_data",
            "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": iv},
            "encrypted_content": ciphertext,
        },
    })
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def _ktri(cek: bytes, recipient: Recipient) -> cms.RecipientInfo:
    """RFC 5652 §6.2.1 with RSAES-OAEP (RFC 8017), SHA-256 and MGF1-SHA-256."""
    encrypted = recipient.public_key.encrypt(cek, asym_padding.OAEP(asym_padding.MGF1(hashes.SHA256()),
                                                                    hashes.SHA256(), None))
    params = algos.RSAESOAEPParams({
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}}})
    return cms.RecipientInfo(name="ktri", value=cms.KeyTransRecipientInfo({
        "version": "v2",
        "rid": cms.RecipientIdentifier(name="subject_key_identifier", value=recipient.key_id),
        "key_encryption_algorithm": {"algorithm": "rsaes_oaep", "parameters": params},
        "encrypted_key": encrypted,
    }))


def _kari(cek: bytes, recipient: Recipient) -> cms.RecipientInfo:
    """RFC 5652 §6.2.2 with RFC 5753 ephemeral-static ECDH, X9.63 KDF (SHA-256), AES-256 key wrap."""
    peer: ec.EllipticCurvePublicKey = recipient.public_key
    ephemeral = ec.generate_private_key(peer.curve)
    shared = ephemeral.exchange(ec.ECDH(), peer)
    wrap_alg = algos.EncryptionAlgorithm({"algorithm": OID_AES256_WRAP})
    shared_info = _EccCmsSharedInfo({"key_info": wrap_alg, "supp_pub_info": (256).to_bytes(4, "big")}).dump()
    kek = X963KDF(hashes.SHA256(), 32, shared_info).derive(shared)
    point = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
    originator = keys.PublicKeyInfo({"algorithm": {"algorithm": "ec"}, "public_key": point})
    return cms.RecipientInfo(name="kari", value=cms.KeyAgreeRecipientInfo({
        "version": "v3",
        "originator": cms.OriginatorIdentifierOrKey(name="originator_key", value=originator),
        "key_encryption_algorithm": {"algorithm": OID_ECDH_SHA256_KDF,
                                     "parameters": core.Any.load(wrap_alg.dump())},
        "recipient_encrypted_keys": [{
            "rid": cms.KeyAgreementRecipientIdentifier(name="r_key_id",
                                                       value={"subject_key_identifier": recipient.key_id}),
            "encrypted_key": aes_key_wrap(kek, cek)}],
    }))


class _AnySet(core.SetOf):
    _child_spec = core.Any


class _EccCmsSharedInfo(core.Sequence):
    """RFC 5753 §7.2 ECC-CMS-SharedInfo."""

    _fields = [("key_info", algos.EncryptionAlgorithm),
               ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
               ("supp_pub_info", core.OctetString, {"explicit": 2})]
