"""Software keys, for tests and development only (never the default for a CA)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.keys.signer import KeySpec, SigningKey


def generate_software_key(spec: KeySpec, label: str) -> SigningKey:
    if spec.algorithm == "ec":
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(spec.curve_obj())
    else:
        key = rsa.generate_private_key(65537, spec.bits or 3072)
    return SigningKey(uri=f"software:{label}", key=key, rsa_pss=spec.rsa_pss)
