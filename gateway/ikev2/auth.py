"""AUTH payload: signed octets (RFC 7296 §2.15) and signature encodings.

- Method 14, Digital Signature (RFC 7427 §3): 1-byte length ‖ AlgorithmIdentifier ‖
  signature. ECDSA signatures are DER ECDSA-Sig-Value; RSASSA-PSS carries its
  parameters (§A.4); Ed25519 signs the octets directly (RFC 8420).
- Methods 9/10/11 (RFC 4754 §3, §7): ECDSA with SHA-256/384/512 on P-256/384/521,
  signature = r ‖ s, fixed width.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import algos
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.ikev2.constants import AuthMethod, HashAlg
from gateway.ikev2.crypto import prf

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_CLASSIC = {AuthMethod.ECDSA_256: ("secp256r1", hashes.SHA256),
            AuthMethod.ECDSA_384: ("secp384r1", hashes.SHA384),
            AuthMethod.ECDSA_521: ("secp521r1", hashes.SHA512)}
_HASH_IDS = {HashAlg.SHA2_256: "sha256", HashAlg.SHA2_384: "sha384", HashAlg.SHA2_512: "sha512"}


class AuthError(ValueError):
    """The AUTH payload does not verify (RFC 7296 §2.21.2: AUTHENTICATION_FAILED)."""


def signed_octets(real_message: bytes, peer_nonce: bytes, prf_alg: int, sk_p: bytes, id_body: bytes) -> bytes:
    """RealMessage | Nonce(other side) | prf(SK_p, RestOfIDPayload) (RFC 7296 §2.15)."""
    return real_message + peer_nonce + prf(prf_alg, sk_p, id_body)


def _hash_obj(name: str) -> hashes.HashAlgorithm:
    if name not in _HASHES:
        raise AuthError(f"unsupported hash {name}")
    return _HASHES[name]()


def _verify_digital_signature(key: PublicKey, data: bytes, octets: bytes, allowed: frozenset[int]) -> str:
    """RFC 7427 §3: parse the AlgorithmIdentifier and check the signature with ``key``."""
    if not data or data[0] + 1 > len(data):
        raise AuthError("bad signature payload")
    try:
        alg = algos.SignedDigestAlgorithm.load(data[1 : 1 + data[0]])
        sig_algo, hash_name = alg.signature_algo, alg.hash_algo
    except ValueError as exc:
        raise AuthError("bad AlgorithmIdentifier") from exc
    sig = data[1 + data[0] :]
    if sig_algo == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
        if HashAlg.IDENTITY not in allowed:
            raise AuthError("identity hash not negotiated")
        key.verify(sig, octets)
        return "ed25519"
    hash_id = {v: k for k, v in _HASH_IDS.items()}.get(hash_name)
    if hash_id not in allowed:
        raise AuthError(f"hash {hash_name} not negotiated")
    if sig_algo == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(sig, octets, ec.ECDSA(_hash_obj(hash_name)))
    elif sig_algo == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
        params = alg["parameters"]
        salt = int(params["salt_length"].native)
        mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        key.verify(sig, octets, padding.PSS(padding.MGF1(_hash_obj(mgf_hash)), salt), _hash_obj(hash_name))
    elif sig_algo == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
        key.verify(sig, octets, padding.PKCS1v15(), _hash_obj(hash_name))
    else:
        raise AuthError(f"{sig_algo} does not fit the certificate key")
    return f"{sig_algo}-{hash_name}"


def _verify_classic_ecdsa(key: PublicKey, method: int, data: bytes, octets: bytes) -> None:
    """RFC 4754 §7: r ‖ s of the curve's size, hash fixed by the method."""
    curve, hcls = _CLASSIC[AuthMethod(method)]
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
        raise AuthError("AUTH method does not fit the certificate key")
    half = len(data) // 2
    if half == 0 or len(data) % 2:
        raise AuthError("bad ECDSA signature length")
    der = encode_dss_signature(int.from_bytes(data[:half], "big"), int.from_bytes(data[half:], "big"))
    key.verify(der, octets, ec.ECDSA(hcls()))


def verify_auth(key: PublicKey, method: int, data: bytes, octets: bytes, allowed: frozenset[int]) -> str:
    """Verify an AUTH payload made with the private key of ``key`` over ``octets``;
    return a label of the scheme used (for the event log), e.g. ``ecdsa-sha256`` or ``ECDSA_384``."""
    try:
        if method == AuthMethod.DIGITAL_SIGNATURE:
            return f"DIGITAL_SIGNATURE/{_verify_digital_signature(key, data, octets, allowed)}"
        if method in _CLASSIC:
            _verify_classic_ecdsa(key, method, data, octets)
            return AuthMethod(method).name
        if method == AuthMethod.RSA_SIG and isinstance(key, rsa.RSAPublicKey):
            key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - RFC 7296 §3.8
            return AuthMethod.RSA_SIG.name
        else:
            raise AuthError(f"unsupported AUTH method {method}")
    except InvalidSignature as exc:
        raise AuthError("signature does not verify") from exc


@dataclass(frozen=True)
class Signature:
    """An AUTH payload to send: method and data."""

    method: int
    data: bytes


def _pss_identifier(hash_name: str) -> bytes:
    size = _hash_obj(hash_name).digest_size
    return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": {
        "hash_algorithm": {"algorithm": hash_name},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": hash_name}},
        "salt_length": size}}).dump()


def _with_length(ident: bytes, sig: bytes) -> Signature:
    return Signature(AuthMethod.DIGITAL_SIGNATURE, bytes([len(ident)]) + ident + sig)


def sign_auth(key: PrivateKey, octets: bytes, peer_hashes: frozenset[int]) -> Signature:
    """Sign our AUTH with RFC 7427 method 14 using a hash the peer announced (§4); without a
    usable one, RFC 4754 methods 9/10/11 (ECDSA) or method 1 (RSA, RFC 7296 §3.8)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):  # RFC 8420: no classic method exists
        return _with_length(algos.SignedDigestAlgorithm({"algorithm": "ed25519"}).dump(), key.sign(octets))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        hid, hname = {256: (HashAlg.SHA2_256, "sha256"), 384: (HashAlg.SHA2_384, "sha384"),
                      521: (HashAlg.SHA2_512, "sha512")}[key.curve.key_size]
        der = key.sign(octets, ec.ECDSA(_hash_obj(hname)))
        if hid in peer_hashes:
            return _with_length(algos.SignedDigestAlgorithm({"algorithm": f"{hname}_ecdsa"}).dump(), der)
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        method = {256: AuthMethod.ECDSA_256, 384: AuthMethod.ECDSA_384, 521: AuthMethod.ECDSA_521}
        return Signature(method[key.curve.key_size], r.to_bytes(size, "big") + s.to_bytes(size, "big"))
    if HashAlg.SHA2_256 not in peer_hashes:
        return Signature(AuthMethod.RSA_SIG, key.sign(octets, padding.PKCS1v15(), hashes.SHA1()))  # noqa: S303
    sig = key.sign(octets, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    return _with_length(_pss_identifier("sha256"), sig)
