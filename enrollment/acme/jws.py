"""JWS request authentication (RFC 8555 §6.2-6.4, RFC 7515 flattened JSON serialization).

Only asymmetric algorithms from ``ALGORITHMS`` authenticate requests; HMAC appears only
inside External Account Binding (§7.3.4, ``verify_eab_mac``). Parsing is strict: unknown
top-level members, unprotected headers, padding in base64url and non-object JSON are refused.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from enrollment.acme.problems import AcmeProblem, bad_alg, malformed

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
ALGORITHMS = {"ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "RS256": ("RSA", None), "EdDSA": ("OKP", "Ed25519")}
HMAC_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48)}
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 8192
MAX_HEADER_BYTES = 8192


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: Any, what: str = "value") -> bytes:
    """Strict base64url without padding (RFC 8555 §6.1, RFC 7515 §2)."""
    if not isinstance(text, str) or not _B64URL.match(text) or len(text) % 4 == 1:
        raise malformed(f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise malformed(f"{what} is not unpadded base64url") from None


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise malformed(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise malformed(f"{what} must be a JSON object")
    return value


@dataclass(frozen=True)
class Jws:
    """A parsed (not yet verified) flattened JWS."""

    protected: dict[str, Any]
    protected_b64: str
    payload_b64: str
    signature: bytes

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")

    @property
    def alg(self) -> str:
        return str(self.protected.get("alg"))

    def payload(self) -> dict[str, Any] | None:
        """The JSON payload, or None for POST-as-GET (empty payload, §6.3)."""
        if self.payload_b64 == "":
            return None
        return json_object(b64d(self.payload_b64, "payload"), "payload")


def parse_jws(data: bytes | dict[str, Any], *, what: str = "request") -> Jws:
    """RFC 7515 §7.2.2 flattened serialization; §6.2: no unprotected header, one signature."""
    obj = json_object(data, what) if isinstance(data, bytes) else data
    if "signatures" in obj or "header" in obj:
        raise malformed(f"{what}: only the flattened JWS serialization without unprotected header is allowed")
    if set(obj) != {"protected", "payload", "signature"}:
        raise malformed(f"{what}: a JWS needs exactly protected, payload and signature")
    protected_b64, payload_b64 = obj["protected"], obj["payload"]
    if not isinstance(protected_b64, str) or len(protected_b64) > MAX_HEADER_BYTES:
        raise malformed(f"{what}: protected header missing or too large")
    protected = json_object(b64d(protected_b64, "protected header"), "protected header")
    if "crit" in protected or "b64" in protected:  # RFC 7515 §4.1.11, RFC 7797: no extensions understood
        raise malformed(f"{what}: crit and b64 header parameters are not supported")
    b64d(payload_b64, "payload")
    return Jws(protected, protected_b64, payload_b64, b64d(obj["signature"], "signature"))


def _int(value: Any, what: str) -> int:
    return int.from_bytes(b64d(value, what), "big")


def public_key_from_jwk(jwk: Any) -> PublicKey:
    """RFC 7517/7518 public keys: EC P-256/P-384, RSA 2048-8192, OKP Ed25519. Private members refused."""
    if not isinstance(jwk, dict):
        raise AcmeProblem("badPublicKey", "jwk must be a JSON object")
    text = json.dumps(jwk, sort_keys=True)
    if len(text) > MAX_HEADER_BYTES:
        raise AcmeProblem("badPublicKey", "jwk is too large")
    return _cached_key(text)


@functools.lru_cache(maxsize=4096)
def _cached_key(text: str) -> PublicKey:
    """Account keys are parsed (and their points checked) once per process."""
    return _parse_jwk(json.loads(text))


def _parse_jwk(jwk: dict[str, Any]) -> PublicKey:
    if "d" in jwk or "p" in jwk:
        raise AcmeProblem("badPublicKey", "jwk contains private key material")
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            curve, size = _CURVES[str(jwk.get("crv"))]
            x, y = b64d(jwk.get("x"), "jwk x"), b64d(jwk.get("y"), "jwk y")
            if len(x) != size or len(y) != size:
                raise AcmeProblem("badPublicKey", "EC coordinates have the wrong length")
            return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                                 curve).public_key()
        if kty == "RSA":
            n, e = _int(jwk.get("n"), "jwk n"), _int(jwk.get("e"), "jwk e")
            if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS or e < 3 or e % 2 == 0 or e.bit_length() > 64:
                raise AcmeProblem("badPublicKey", f"RSA keys must have {MIN_RSA_BITS}-{MAX_RSA_BITS} bits")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kty == "OKP" and jwk.get("crv") == "Ed25519":
            x = b64d(jwk.get("x"), "jwk x")
            if len(x) != 32:
                raise AcmeProblem("badPublicKey", "Ed25519 key has the wrong length")
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
    except (KeyError, TypeError):
        pass
    except ValueError:
        raise AcmeProblem("badPublicKey", "jwk is not a valid public key") from None
    raise AcmeProblem("badPublicKey", "unsupported key type (EC P-256/P-384, RSA, Ed25519)")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), base64url."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return b64e(hashlib.sha256(canonical.encode()).digest())


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """Only the public members (what we store)."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    return {k: jwk[k] for k in members}


def check_alg(alg: Any, key: PublicKey) -> None:
    """§6.2: alg from the allow-list and consistent with the key."""
    if alg not in ALGORITHMS:
        raise bad_alg(f"signature algorithm {str(alg)[:32]!r} is not supported")
    kty, crv = ALGORITHMS[alg]
    ok = ((kty == "EC" and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name ==
           {"P-256": "secp256r1", "P-384": "secp384r1"}[crv or ""])
          or (kty == "RSA" and isinstance(key, rsa.RSAPublicKey))
          or (kty == "OKP" and isinstance(key, ed25519.Ed25519PublicKey)))
    if not ok:
        raise bad_alg(f"algorithm {alg} does not match the account key")


def verify_signature(jws: Jws, key: PublicKey) -> None:
    check_alg(jws.alg, key)
    sig, data = jws.signature, jws.signing_input
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(sig) != 2 * size:
                raise InvalidSignature
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            key.verify(der, data, ec.ECDSA(hashes.SHA256() if size == 32 else hashes.SHA384()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(sig, data)
    except InvalidSignature:
        raise malformed("JWS signature is invalid") from None


def verify_eab_mac(jws: Jws, key: bytes) -> None:
    """§7.3.4: the binding JWS is MACed with the EAB key (HS256/384/512), compared in constant time."""
    alg = jws.protected.get("alg")
    if alg not in HMAC_ALGS:
        raise AcmeProblem("unauthorized", "externalAccountBinding must use HS256, HS384 or HS512")
    expected = hmac.new(key, jws.signing_input, HMAC_ALGS[alg]).digest()
    if not hmac.compare_digest(expected, jws.signature):
        raise AcmeProblem("unauthorized", "externalAccountBinding MAC is invalid")
