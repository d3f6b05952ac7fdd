"""EAP pass-through at the responder (RFC 7296 §2.16, RFC 4739, RFC 3579).

The responder is an EAP pass-through authenticator: EAP packets from the initiator's EAP
payloads go to a RADIUS server in Access-Requests and the server's EAP-Message comes
back in our EAP payload. On Access-Accept the MSK (MS-MPPE-Recv-Key ‖ MS-MPPE-Send-Key,
RFC 2548) keys both AUTH payloads: AUTH = prf(prf(MSK, "Key Pad for IKEv2"), signed
octets); a method without MSK (e.g. EAP-GTC) uses SK_pi / SK_pr instead (§2.16).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from gateway.ikev2 import codec as c
from gateway.ikev2.crypto import prf
from gateway.ikev2.sa import RadiusGrant
from gateway.radius import packet as rp
from gateway.radius.client import Server

KEY_PAD = b"Key Pad for IKEv2"
EAP_REQUEST, EAP_RESPONSE, EAP_SUCCESS, EAP_FAILURE = 1, 2, 3, 4
EAP_IDENTITY = 1
METHODS = {1: "identity", 3: "nak", 4: "md5", 6: "gtc", 13: "tls", 21: "ttls", 25: "peap", 26: "mschapv2",
           43: "fast", 52: "pwd"}
MAX_IDENTITY = 253


class EapError(ValueError):
    """A malformed EAP packet (RFC 3748 §4)."""


class Phase(StrEnum):
    WAIT_IDI = "wait-second-idi"  # RFC 4739: first round done, second IDi expected
    EAP = "eap"  # EAP conversation with the RADIUS server running
    WAIT_AUTH = "wait-auth"  # EAP Success sent; the initiator's MSK-keyed AUTH expected


@dataclass
class EapState:
    """Per-IKE-SA EAP conversation."""

    phase: Phase
    first: tuple[c.Payload, ...]  # the first IKE_AUTH request (SA, TS, CP, notifies)
    idi_body: bytes = b""  # IDi' of the EAP round (RFC 4739 §4: the second IDi)
    idi: c.ID | None = None
    identity: str = ""
    next_id: int = 1
    state_attr: bytes | None = None
    server: Server | None = None
    method: str = ""
    msk: bytes | None = None
    grant: RadiusGrant | None = None
    rounds: int = 0
    failure: bytes | None = None  # the server's EAP-Failure, relayed as is


def parse_eap(data: bytes) -> tuple[int, int, int, bytes]:
    """(code, identifier, type, type-data) of an EAP packet (RFC 3748 §4); type 0 for
    Success/Failure."""
    if len(data) < 4:
        raise EapError("short EAP packet")
    code, ident, length = data[0], data[1], int.from_bytes(data[2:4], "big")
    if length != len(data) or code not in (1, 2, 3, 4):
        raise EapError("bad EAP length or code")
    if code in (EAP_SUCCESS, EAP_FAILURE):
        if length != 4:
            raise EapError("Success/Failure carry no data")
        return code, ident, 0, b""
    if length < 5:
        raise EapError("EAP Request/Response without type")
    return code, ident, data[4], data[5:]


def identity_request(ident: int) -> bytes:
    return bytes((EAP_REQUEST, ident & 0xFF)) + (5).to_bytes(2, "big") + bytes((EAP_IDENTITY,))


def eap_payload(data: bytes) -> c.Unknown:
    return c.Unknown(raw_type=48, data=data)  # RFC 7296 §3.16


def eap_of(payloads: tuple[c.Payload, ...]) -> bytes | None:
    return next((p.data for p in payloads if isinstance(p, c.Unknown) and p.raw_type == 48), None)


def msk_auth(prf_alg: int, key: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <signed octets>) (RFC 7296 §2.15)."""
    return prf(prf_alg, prf(prf_alg, key, KEY_PAD), octets)


def auth_matches(got: bytes, want: bytes) -> bool:
    return hmac.compare_digest(got, want)


def grant_of(answer: rp.Packet, server: str) -> RadiusGrant:
    """The Access-Accept attributes the policy uses (RFC 2865 §5.8/§5.11/§5.25/§5.27, RFC 2869 §5.16),
    and its User-Name: the name the server authenticated, which the NAS uses from then on
    (RFC 2865 §5.1: "the client SHOULD use this name in all Accounting-Request packets")."""
    def text(v: bytes) -> str:
        return v.decode("utf-8", "replace")[:253]

    timeout = answer.first(rp.Attr.SESSION_TIMEOUT)
    interim = answer.first(rp.Attr.ACCT_INTERIM_INTERVAL)
    framed = answer.first(rp.Attr.FRAMED_IP_ADDRESS)
    user = answer.first(rp.Attr.USER_NAME)
    return RadiusGrant(
        server=server,
        filter_ids=tuple(text(v) for v in answer.get(rp.Attr.FILTER_ID)),
        classes=tuple(text(v) for v in answer.get(rp.Attr.CLASS)),
        session_timeout=int.from_bytes(timeout, "big") if timeout and len(timeout) == 4 else None,
        interim_interval=int.from_bytes(interim, "big") if interim and len(interim) == 4 else None,
        framed_ip=rp.ipv4(framed) if framed else None,
        class_raw=tuple(answer.get(rp.Attr.CLASS)),
        user_name=text(user) if user else None,
    )
