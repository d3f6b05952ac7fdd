"""IKEv2 key material and the AEAD-protected SK payload.

- prf / prf+ and SKEYSEED / SK_* derivation: RFC 7296 §2.13, §2.14, rekey §2.18.
- AES-GCM-16 in IKEv2: RFC 5282 §3-§5 (8-byte IV, 4-byte salt from the end of SK_e,
  AAD = IKE header ‖ SK payload header); ChaCha20-Poly1305: RFC 7634 §2-§3.
- DH groups 19/20/21 (RFC 5903: KE data = x ‖ y, shared secret = x) and 31 (RFC 8031).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from gateway.ikev2.codec import HEADER_LEN, Header, MalformedMessage, Payload, encode_chain
from gateway.ikev2.constants import DhGroup, Encr, PayloadType, Prf

PRF_HASH = {Prf.HMAC_SHA2_256: "sha256", Prf.HMAC_SHA2_384: "sha384", Prf.HMAC_SHA2_512: "sha512"}
IV_LEN = 8
ICV_LEN = 16
SALT_LEN = 4


class IntegrityError(MalformedMessage):
    """The SK payload failed AEAD authentication (RFC 7296 §2.21.2: drop silently)."""


def prf(alg: int, key: bytes, data: bytes) -> bytes:
    """HMAC-SHA2 PRF (RFC 4868 §2.3)."""
    return hmac.new(key, data, PRF_HASH[Prf(alg)]).digest()


def prf_plus(alg: int, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (RFC 7296 §2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = prf(alg, key, t + seed + bytes([n]))
        out += t
        n += 1
        if n > 255:
            raise ValueError("prf+ output too long")
    return out[:length]


@dataclass(frozen=True)
class Suite:
    """The negotiated IKE SA transforms (AEAD only, so no INTEG, RFC 5282 §8)."""

    encr: int
    key_bits: int
    prf: int
    dh: int

    @property
    def enc_key_len(self) -> int:
        return (32 if self.encr == Encr.CHACHA20_POLY1305 else self.key_bits // 8) + SALT_LEN

    @property
    def prf_len(self) -> int:
        return hashlib.new(PRF_HASH[Prf(self.prf)]).digest_size


@dataclass(frozen=True)
class Keys:
    """SK_d, SK_ei/er, SK_pi/pr (RFC 7296 §2.14; SK_a* are empty with AEAD)."""

    sk_d: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes


def derive_keys(suite: Suite, skeyseed: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes) -> Keys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    p, e = suite.prf_len, suite.enc_key_len
    km = prf_plus(suite.prf, skeyseed, ni + nr + spi_i + spi_r, 3 * p + 2 * e)
    parts = [km[:p], km[p : p + e], km[p + e : p + 2 * e], km[p + 2 * e : 2 * p + 2 * e], km[2 * p + 2 * e :]]
    return Keys(*parts)


def skeyseed_initial(suite: Suite, ni: bytes, nr: bytes, shared: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14)."""
    return prf(suite.prf, ni + nr, shared)


def skeyseed_rekey(suite: Suite, old_prf: int, sk_d: bytes, shared: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) (RFC 7296 §2.18), with the old SA's PRF."""
    return prf(old_prf, sk_d, shared + ni + nr)


def _aead(suite: Suite, key: bytes) -> AESGCM | ChaCha20Poly1305:
    raw = key[:-SALT_LEN]
    return ChaCha20Poly1305(raw) if suite.encr == Encr.CHACHA20_POLY1305 else AESGCM(raw)


def seal(suite: Suite, key: bytes, header: Header, payloads: list[Payload], iv: bytes | None = None) -> bytes:
    """Build a whole message whose payloads travel inside SK (RFC 7296 §3.14, RFC 5282 §5)."""
    inner = encode_chain(payloads)
    plaintext = inner + b"\x00"  # no padding, Pad Length 0
    iv = iv or os.urandom(IV_LEN)
    sk_len = 4 + IV_LEN + len(plaintext) + ICV_LEN
    first_inner = payloads[0].payload_type if payloads else 0
    hdr = Header(header.spi_i, header.spi_r, PayloadType.SK, header.exchange, header.flags,
                 header.message_id, HEADER_LEN + sk_len, header.version)
    aad = hdr.encode() + struct.pack("!BBH", first_inner, 0, sk_len)
    ct = _aead(suite, key).encrypt(key[-SALT_LEN:] + iv, plaintext, aad)
    return aad + iv + ct


def seal_fragments(suite: Suite, key: bytes, header: Header, payloads: list[Payload], max_size: int
                   ) -> list[bytes]:
    """Split the inner chain over SKF payloads of at most ``max_size`` octets (RFC 7383 §2.5).

    Each fragment is padded and protected on its own; the AAD is the IKE header plus the SKF
    header including Fragment Number and Total Fragments (RFC 7383 §2.5.3, RFC 5282 §5)."""
    inner = encode_chain(payloads)
    room = max(64, max_size - (HEADER_LEN + 8 + IV_LEN + 1 + ICV_LEN))
    parts = [inner[i : i + room] for i in range(0, len(inner), room)] or [b""]
    first_inner = payloads[0].payload_type if payloads else 0
    out = []
    for number, part in enumerate(parts, 1):
        iv = os.urandom(IV_LEN)
        skf_len = 8 + IV_LEN + len(part) + 1 + ICV_LEN
        hdr = Header(header.spi_i, header.spi_r, PayloadType.SKF, header.exchange, header.flags,
                     header.message_id, HEADER_LEN + skf_len, header.version)
        aad = hdr.encode() + struct.pack("!BBHHH", first_inner if number == 1 else 0, 0, skf_len, number, len(parts))
        out.append(aad + iv + _aead(suite, key).encrypt(key[-SALT_LEN:] + iv, part + b"\x00", aad))
    return out


def open_sk(suite: Suite, key: bytes, raw: bytes, sk_offset: int, fragment: bool = False) -> bytes:
    """Authenticate and decrypt the SK (or SKF) payload at ``sk_offset`` of ``raw``; return its
    plaintext without padding. The AAD runs up to the IV (RFC 5282 §5, RFC 7383 §2.5.3)."""
    aad_end = sk_offset + (8 if fragment else 4)
    body = raw[aad_end:]
    if len(body) < IV_LEN + ICV_LEN + 1:
        raise MalformedMessage("SK payload too short")
    iv, ct = body[:IV_LEN], body[IV_LEN:]
    try:
        pt = _aead(suite, key).decrypt(key[-SALT_LEN:] + iv, ct, raw[:aad_end])
    except Exception as exc:  # cryptography raises InvalidTag
        raise IntegrityError("SK integrity check failed") from exc
    pad = pt[-1]
    if pad + 1 > len(pt):
        raise MalformedMessage("bad SK padding")
    return pt[: len(pt) - 1 - pad]


_CURVES: dict[int, ec.EllipticCurve] = {
    DhGroup.ECP_256: ec.SECP256R1(), DhGroup.ECP_384: ec.SECP384R1(), DhGroup.ECP_521: ec.SECP521R1()}


class KeyExchangeError(ValueError):
    """The peer's KE data is not a valid public value for its group."""


@dataclass(frozen=True)
class DhPrivate:
    """An ephemeral DH private value and its KE payload octets."""

    group: int
    key: ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey

    @classmethod
    def generate(cls, group: int) -> DhPrivate:
        if group == DhGroup.CURVE_25519:
            return cls(group, x25519.X25519PrivateKey.generate())
        return cls(group, ec.generate_private_key(_CURVES[group]))

    def public(self) -> bytes:
        if isinstance(self.key, x25519.X25519PrivateKey):
            return self.key.public_key().public_bytes_raw()
        nums = self.key.public_key().public_numbers()
        size = (self.key.curve.key_size + 7) // 8
        return nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")

    def shared(self, peer: bytes) -> bytes:
        """g^ir (RFC 5903 §7: the x coordinate; RFC 8031 §2: X25519 output, all-zero refused)."""
        try:
            if isinstance(self.key, x25519.X25519PrivateKey):
                return self.key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
            size = (self.key.curve.key_size + 7) // 8
            if len(peer) != 2 * size:
                raise KeyExchangeError("bad KE length")
            pub = ec.EllipticCurvePublicKey.from_encoded_point(self.key.curve, b"\x04" + peer)
            return self.key.exchange(ec.ECDH(), pub)
        except ValueError as exc:
            raise KeyExchangeError(str(exc)) from exc


SUPPORTED_GROUPS = (DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.ECP_521, DhGroup.CURVE_25519)


KE_LENGTH = {DhGroup.ECP_256: 64, DhGroup.ECP_384: 96, DhGroup.ECP_521: 132, DhGroup.CURVE_25519: 32}
