"""The signer abstraction: a key URI plus an object implementing cryptography's private-key API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

KeyAlgorithm = Literal["ec", "rsa"]
_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}


@dataclass(frozen=True)
class KeySpec:
    """What key to create: ``ec`` P-256/P-384 or ``rsa`` 3072/4096 (PKCS#1 v1.5 or PSS signatures)."""

    algorithm: KeyAlgorithm
    curve: str | None = None
    bits: int | None = None
    rsa_pss: bool = False

    def __post_init__(self) -> None:
        if self.algorithm == "ec" and self.curve not in _CURVES:
            raise ValueError(f"unsupported curve {self.curve!r} (P-256, P-384)")
        if self.algorithm == "rsa" and self.bits not in (2048, 3072, 4096):
            raise ValueError(f"unsupported RSA size {self.bits!r} (2048 for RA/legacy, 3072, 4096)")

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        """``ec:P-256``, ``ec:P-384``, ``rsa:3072``, ``rsa:4096``, ``rsa-pss:3072``."""
        kind, _, arg = text.partition(":")
        if kind == "ec":
            return cls("ec", curve=arg)
        if kind in ("rsa", "rsa-pss") and arg.isdigit():
            return cls("rsa", bits=int(arg), rsa_pss=kind == "rsa-pss")
        raise ValueError(f"bad key spec {text!r}")

    def curve_obj(self) -> ec.EllipticCurve:
        return _CURVES[self.curve or ""]()

    def __str__(self) -> str:
        if self.algorithm == "ec":
            return f"ec:{self.curve}"
        return f"{'rsa-pss' if self.rsa_pss else 'rsa'}:{self.bits}"


@dataclass(frozen=True)
class SigningKey:
    """A key that signs certificates, CRLs, OCSP responses and events.

    ``key`` is a cryptography private key: a software key or the PKCS#11 adapter. ``uri`` is the
    RFC 7512 URI for HSM keys or ``software:<label>`` for software keys.
    """

    uri: str
    key: CertificateIssuerPrivateKeyTypes
    rsa_pss: bool = False

    @property
    def hash_algorithm(self) -> hashes.SHA256 | hashes.SHA384 | None:
        return signature_hash_for(self.key)

    def rsa_padding(self) -> padding.PSS | padding.PKCS1v15 | None:
        """The padding x509 builders need for this key (PSS with salt = digest length)."""
        if not isinstance(self.key, rsa.RSAPrivateKey):
            return None
        if self.rsa_pss:
            h = signature_hash_for(self.key) or hashes.SHA256()
            return padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH)
        return padding.PKCS1v15()


def signature_hash_for(key: object) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash matched to the key's strength (RFC 5480 §4: P-384 with SHA-384)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA384() if key.key_size >= 4096 else hashes.SHA256()
    raise TypeError(f"unsupported signing key {type(key).__name__}")
