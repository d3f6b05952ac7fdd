"""Wire helpers shared by the AK-enrollment server (:mod:`enrollment.attestation.routes`) and the device
agent (:mod:`enrollment.attestation.cli`), kept free of server imports so the agent starts fast."""

from __future__ import annotations

import base64
import hashlib
import hmac

MAC_CONTEXT = "ikepki-attest-v1"


def b64e(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def start_mac_input(ek_certificate_b64: str, ak_public_b64: str) -> bytes:
    """The bytes the EAB HMAC of ``/attest/v1/ak/start`` covers."""
    return f"{MAC_CONTEXT}\n{ek_certificate_b64}\n{ak_public_b64}".encode("ascii")


def start_mac(hmac_key: bytes, ek_certificate_b64: str, ak_public_b64: str) -> str:
    """Client side: the ``eab.mac`` value (base64url HMAC-SHA256)."""
    return b64e(hmac.new(hmac_key, start_mac_input(ek_certificate_b64, ak_public_b64), hashlib.sha256).digest())
