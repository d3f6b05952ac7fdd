"""Signature AlgorithmIdentifiers and signing through a :class:`ca.keys.signer.SigningKey` (HSM or
software) for the hand-built DER of CRLs and OCSP responses (RFC 5280 §4.1.1.2, RFC 5758 §3.2,
RFC 4055 §3.1)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.der import der_integer, der_oid, der_seq, der_tlv, explicit
from ca.keys.signer import SigningKey

_ECDSA = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3", "sha512": "1.2.840.10045.4.3.4"}
_RSA = {"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12", "sha512": "1.2.840.113549.1.1.13"}
_HASH = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2", "sha512": "2.16.840.1.101.3.4.2.3"}
_NULL = b"\x05\x00"


def algorithm_identifier(sk: SigningKey) -> bytes:
    """The AlgorithmIdentifier DER that matches how :func:`sign` signs with this key."""
    h = sk.hash_algorithm or hashes.SHA256()
    if isinstance(sk.key, ec.EllipticCurvePrivateKey):
        return der_seq(der_oid(_ECDSA[h.name]))  # parameters absent (RFC 5758 §3.2)
    if isinstance(sk.key, rsa.RSAPrivateKey):
        if sk.rsa_pss:
            hash_alg = der_seq(der_oid(_HASH[h.name]), _NULL)
            mgf = der_seq(der_oid("1.2.840.113549.1.1.8"), hash_alg)
            params = der_seq(explicit(0, hash_alg), explicit(1, mgf), explicit(2, der_integer(h.digest_size)))
            return der_seq(der_oid("1.2.840.113549.1.1.10"), params)
        return der_seq(der_oid(_RSA[h.name]), _NULL)
    raise TypeError(f"unsupported signing key {type(sk.key).__name__}")


def sign(sk: SigningKey, data: bytes) -> bytes:
    """Signature value (ECDSA: DER Ecdsa-Sig-Value; RSA: the raw block). Blocking (HSM)."""
    h = sk.hash_algorithm or hashes.SHA256()
    if isinstance(sk.key, ec.EllipticCurvePrivateKey):
        return sk.key.sign(data, ec.ECDSA(h))
    if isinstance(sk.key, rsa.RSAPrivateKey):
        pad = sk.rsa_padding() or padding.PKCS1v15()
        return sk.key.sign(data, pad, h)
    raise TypeError(f"unsupported signing key {type(sk.key).__name__}")


def signed(sk: SigningKey, tbs: bytes, alg_id: bytes | None = None) -> bytes:
    """SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature } (CertificateList, BasicOCSPResponse
    without certs)."""
    return der_seq(tbs, alg_id or algorithm_identifier(sk), der_tlv(0x03, b"\x00" + sign(sk, tbs)))
