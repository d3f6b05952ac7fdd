"""Signing keys: one interface (cryptography's private-key classes) for HSM and software keys.

Every signing path in ikepki receives a :class:`~ca.keys.signer.SigningKey`; its ``key``
is either a cryptography software key (tests/dev) or a PKCS#11-backed adapter that
implements the same interface, so pyca/cryptography's certificate, CRL and OCSP
builders sign through the HSM unchanged.
"""

from ca.keys.signer import KeySpec, SigningKey, signature_hash_for

__all__ = ["KeySpec", "SigningKey", "signature_hash_for"]
