"""Generic JSON alerts signed the Standard Webhooks way (standardwebhooks.com, spec v1).

Headers: ``webhook-id`` (unique message id), ``webhook-timestamp`` (integer Unix seconds),
``webhook-signature`` (space-separated ``v1,<base64 HMAC-SHA256>`` entries, any may match). The
signed content is ``{id}.{timestamp}.{body}``; the key is the base64 part of ``whsec_<base64>``.
Timestamps outside the tolerance (default 5 minutes either way) are refused; ids are remembered
(by the caller, in the database) for longer than the tolerance, so a replay is refused too.

Body: a JSON object; fields are its flattened members. ``status`` = ``resolved`` resolves;
``fingerprint`` (configurable) names the alert across firing and resolved (default: the id).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from response.alerts import Alert, AlertStatus, flatten
from response.errors import HookRefused, Refusal

FORMAT = "standard-webhooks"
MAX_ID = 128
MAX_SIGNATURES = 8


@dataclass(frozen=True)
class Signed:
    msg_id: str
    timestamp: int


def decode_secret(secret: str) -> bytes:
    """``whsec_<base64>`` (or bare base64) -> key bytes."""
    text = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)  # unpadded secrets exist
    except binascii.Error:
        raise ValueError("a Standard Webhooks secret is whsec_<base64>") from None
    if len(key) < 16:
        raise ValueError("a Standard Webhooks secret needs at least 16 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value a sender puts on this message."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(headers: Mapping[str, str], body: bytes, keys: list[bytes], now: datetime, tolerance: int) -> Signed:
    """Check id, timestamp and signature (constant-time); the replay check is the caller's."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    sigs = headers.get("webhook-signature", "")
    if not msg_id or not stamp or not sigs:
        raise HookRefused(Refusal.UNAUTHENTICATED, "webhook-id, webhook-timestamp and webhook-signature are required")
    if len(msg_id) > MAX_ID or not msg_id.isprintable():
        raise HookRefused(Refusal.MALFORMED, "webhook-id is too long or not printable")
    if not stamp.isdigit() or len(stamp) > 12:
        raise HookRefused(Refusal.MALFORMED, "webhook-timestamp must be integer seconds")
    timestamp = int(stamp)
    if abs(now.timestamp() - timestamp) > tolerance:
        raise HookRefused(Refusal.STALE_TIMESTAMP, f"webhook-timestamp is more than {tolerance} s from now")
    expected = [sign(k, msg_id, timestamp, body).encode() for k in keys]
    good = False
    for entry in sigs.split(" ")[:MAX_SIGNATURES]:
        if not entry.startswith("v1,"):
            continue
        for want in expected:
            good |= hmac.compare_digest(entry.encode(), want)
    if not good:
        raise HookRefused(Refusal.BAD_SIGNATURE, "no v1 signature matches")
    return Signed(msg_id, timestamp)


def parse(source: str, body: bytes, signed: Signed, fingerprint_field: str) -> list[Alert]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HookRefused(Refusal.MALFORMED, "body is not JSON") from None
    if not isinstance(data, dict):
        raise HookRefused(Refusal.MALFORMED, "body must be a JSON object")
    fields = flatten(data)
    status = fields.get("status", "firing").lower()
    if status not in ("firing", "resolved"):
        raise HookRefused(Refusal.MALFORMED, "status must be firing or resolved")
    fingerprint = fields.get(fingerprint_field) or signed.msg_id
    return [Alert(source, FORMAT, fingerprint[:128], AlertStatus(status), fields)]
