"""Keylime verifier revocation notifier, webhook flavour.

The verifier POSTs ``{"msg": "<JSON text>", "signature": "<base64>" | "none"}``; ``msg`` carries
``type, agent_id, ip, port, tpm_policy, meta_data, event_time, event_id, severity_label, context``.
Unsigned messages carry ``"signature": ""`` (Keylime 7) or ``"none"`` (older releases). The
signature is RSASSA-PSS (RFC 8017 §8.1) with SHA-256, MGF1-SHA-256 and the maximum salt length
over the UTF-8 bytes of ``msg``, base64-encoded (keylime/crypto.py ``rsa_sign``), made with the
agent's revocation key, whose certificate the tenant's CA issues (``RevocationNotifier-cert.crt``,
keylime/revocation_notifier.py ``process_revocation`` verifies with it). Keylime's webhook sends no
credentials of its own: this signature is the authentication, and Keylime retries until 200/202.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from response.alerts import Alert, AlertStatus, flatten
from response.errors import HookRefused, Refusal

FORMAT = "keylime"
MAX_MSG = 256 * 1024


def load_verifier_key(pem: bytes) -> rsa.RSAPublicKey:
    """The verifier's revocation key from a PEM certificate or a PEM public key."""
    try:
        key: Any = x509.load_pem_x509_certificate(pem).public_key() if b"CERTIFICATE" in pem \
            else serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate or public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Keylime revocation key must be RSA")
    return key


def parse(source: str, body: bytes, verifier_key: rsa.RSAPublicKey | None, allow_unsigned: bool) -> list[Alert]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HookRefused(Refusal.MALFORMED, "body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("msg"), str) or len(data["msg"]) > MAX_MSG:
        raise HookRefused(Refusal.MALFORMED, "expected {\"msg\": <JSON text>, \"signature\": …}")
    msg: str = data["msg"]
    signature = data.get("signature")
    if verifier_key is not None:
        if not isinstance(signature, str) or signature in ("", "none"):
            raise HookRefused(Refusal.BAD_SIGNATURE, "unsigned Keylime message; a verifier key is configured")
        verify(verifier_key, msg, signature)
    elif not allow_unsigned:
        raise HookRefused(Refusal.UNAUTHENTICATED, "no verifier key configured and unsigned messages not allowed")
    try:
        event = json.loads(msg)
    except ValueError:
        raise HookRefused(Refusal.MALFORMED, "'msg' is not JSON text") from None
    if not isinstance(event, dict) or not isinstance(event.get("agent_id"), str):
        raise HookRefused(Refusal.MALFORMED, "'msg' needs an agent_id")
    meta = event.get("meta_data")
    if isinstance(meta, str):  # Keylime sends meta_data as JSON text
        with contextlib.suppress(ValueError):
            event = {**event, "meta_data": json.loads(meta)}
    fields = flatten(event)
    event_id = str(event.get("event_id") or "")[:128]
    fingerprint = event_id or f"{event['agent_id'][:64]}:{str(event.get('event_time', ''))[:40]}"
    return [Alert(source, FORMAT, fingerprint, AlertStatus.firing, fields)]


REPLAY_KEEP_DAYS = 30


def message_id(body: bytes) -> str:
    """The replay-memory id of a parsed notification: SHA-256 of its ``msg`` text. Keylime's
    signature covers ``msg`` only and carries no nonce, so a captured message stays verifiable
    forever; the hook remembers each one for :data:`REPLAY_KEEP_DAYS` and refuses it again."""
    msg: str = json.loads(body)["msg"]
    return "keylime-sha256:" + hashlib.sha256(msg.encode()).hexdigest()


def verify(key: rsa.RSAPublicKey, msg: str, signature: str) -> None:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, msg.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                  salt_length=padding.PSS.MAX_LENGTH), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        raise HookRefused(Refusal.BAD_SIGNATURE, "Keylime signature does not verify") from None
