"""Key derivation and AUTH octets checked against values strongSwan 5.9.8 logged (filelog ike 4).

The vector comes from one charon → ikepki exchange (aes256gcm16-prfsha256-ecp256);
charon computed g^ir, SKEYSEED, SK_* and both signed-octet strings independently of us.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.ikev2 import codec as c
from gateway.ikev2.auth import AuthError, sign_auth, signed_octets, verify_auth
from gateway.ikev2.constants import HEADER_LEN, Encr, HashAlg, Prf
from gateway.ikev2.crypto import (
    IntegrityError,
    Suite,
    derive_keys,
    open_sk,
    prf_plus,
    seal,
    skeyseed_initial,
)

V = json.loads((Path(__file__).parent / "vectors" / "charon-ike-sa-ecp256-aes256gcm.json").read_text())
SUITE = Suite(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256, 19)


def _b(name: str) -> bytes:
    return bytes.fromhex(V[name])


def _nonce(raw: bytes) -> bytes:
    msg = c.parse_message(raw)
    return next(p.data for p in msg.payloads if isinstance(p, c.Nonce))


def test_skeyseed_and_sk_keys_match_charon() -> None:
    req, resp = _b("init_request"), _b("init_response")
    ni, nr = _nonce(req), _nonce(resp)
    seed = skeyseed_initial(SUITE, ni, nr, _b("g_ir"))
    assert seed == _b("skeyseed")
    keys = derive_keys(SUITE, seed, ni, nr, req[:8], resp[8:16])
    assert (keys.sk_d, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr) == (
        _b("sk_d"), _b("sk_ei"), _b("sk_er"), _b("sk_pi"), _b("sk_pr"))


def test_signed_octets_match_charon() -> None:
    req, resp = _b("init_request"), _b("init_response")
    assert signed_octets(req, _nonce(resp), Prf.HMAC_SHA2_256, _b("sk_pi"), _b("idi_body")) == _b("octets_i")
    assert signed_octets(resp, _nonce(req), Prf.HMAC_SHA2_256, _b("sk_pr"), _b("idr_body")) == _b("octets_r")


def test_auth_response_opens_and_verifies() -> None:
    raw = _b("auth_response")
    inner = open_sk(SUITE, _b("sk_er"), raw, HEADER_LEN)
    sk = c.parse_message(raw).payloads[0]
    assert isinstance(sk, c.Encrypted)
    payloads = c.parse_chain(sk.first_inner, inner)
    kinds = [type(p).__name__ for p in payloads]
    assert kinds[:3] == ["ID", "Cert", "Auth"]
    auth = next(p for p in payloads if isinstance(p, c.Auth))
    cert = x509.load_pem_x509_certificate(V["gw_cert_pem"].encode())
    verify_auth(cert.public_key(), auth.method, auth.data, _b("octets_r"),  # type: ignore[arg-type]
                frozenset({HashAlg.SHA2_256}))
    with pytest.raises(AuthError):
        verify_auth(cert.public_key(), auth.method, auth.data, _b("octets_i"),  # type: ignore[arg-type]
                    frozenset({HashAlg.SHA2_256}))


def test_tampered_sk_payload_is_rejected() -> None:
    raw = bytearray(_b("auth_response"))
    raw[-20] ^= 1
    with pytest.raises(IntegrityError):
        open_sk(SUITE, _b("sk_er"), bytes(raw), HEADER_LEN)


def test_seal_uses_rfc5282_nonce_and_aad() -> None:
    key = bytes(range(36))
    hdr = c.Header(b"A" * 8, b"B" * 8, 0, 37, 0x20, 5)
    iv = b"\x01" * 8
    out = seal(SUITE, key, hdr, [c.Notify(16384)], iv=iv)
    aad = out[: HEADER_LEN + 4]
    assert out[HEADER_LEN + 4 : HEADER_LEN + 12] == iv
    plain = AESGCM(key[:32]).decrypt(key[32:] + iv, out[HEADER_LEN + 12 :], aad)
    assert plain[-1] == 0 and c.parse_chain(41, plain[:-1]) == (c.Notify(16384),)


def test_prf_plus_counter_and_length() -> None:
    a = prf_plus(Prf.HMAC_SHA2_256, b"k", b"seed", 100)
    assert len(a) == 100 and a[:32] == prf_plus(Prf.HMAC_SHA2_256, b"k", b"seed", 32)
    with pytest.raises(ValueError, match="too long"):
        prf_plus(Prf.HMAC_SHA2_256, b"k", b"s", 32 * 256)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_sign_auth_uses_announced_hash_or_classic_method(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    hid = {256: HashAlg.SHA2_256, 384: HashAlg.SHA2_384, 521: HashAlg.SHA2_512}[curve.key_size]
    modern = sign_auth(key, b"octets", frozenset({hid}))
    assert modern.method == 14
    assert verify_auth(key.public_key(), modern.method, modern.data, b"octets", frozenset({hid})).startswith(
        "DIGITAL_SIGNATURE/ecdsa")
    classic = sign_auth(key, b"octets", frozenset())
    assert classic.method in (9, 10, 11) and len(classic.data) == 2 * ((curve.key_size + 7) // 8)
    assert verify_auth(key.public_key(), classic.method, classic.data, b"octets", frozenset()) == \
        f"ECDSA_{curve.key_size}"
    with pytest.raises(AuthError):
        verify_auth(key.public_key(), modern.method, modern.data, b"octets", frozenset({HashAlg.SHA1}))


def test_rsa_pss_and_ed25519_round_trip() -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    pss = sign_auth(rsa_key, b"m", frozenset({HashAlg.SHA2_256}))
    assert verify_auth(rsa_key.public_key(), pss.method, pss.data, b"m",
                       frozenset({HashAlg.SHA2_256})) == "DIGITAL_SIGNATURE/rsassa_pss-sha256"
    legacy = sign_auth(rsa_key, b"m", frozenset())
    assert verify_auth(rsa_key.public_key(), legacy.method, legacy.data, b"m", frozenset()) == "RSA_SIG"
    ed = ed25519.Ed25519PrivateKey.generate()
    sig = sign_auth(ed, b"m", frozenset({HashAlg.IDENTITY}))
    assert verify_auth(ed.public_key(), sig.method, sig.data, b"m", frozenset({HashAlg.IDENTITY})) == \
        "DIGITAL_SIGNATURE/ed25519"
    with pytest.raises(AuthError):
        verify_auth(ed.public_key(), sig.method, sig.data, b"tampered", frozenset({HashAlg.IDENTITY}))
