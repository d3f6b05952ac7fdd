"""Per-SA state (RFC 7296 §2.1-§2.3: message IDs, window size 1, retransmission cache)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509

from ca.identity import Identity
from gateway.ikev2.codec import Proposal
from gateway.ikev2.constants import DhGroup, Encr, Prf
from gateway.ikev2.crypto import Keys, Suite

Address = tuple[str, int]


class SaState(StrEnum):
    HALF_OPEN = "half-open"
    ESTABLISHED = "established"
    REKEYED = "rekeyed"
    DELETING = "deleting"
    FAILED = "failed"


@dataclass(frozen=True)
class ChildSa:
    """A negotiated (never installed) ESP SA pair with its narrowed selectors."""

    spi_in: bytes
    spi_out: bytes
    proposal: Proposal
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    created: datetime

    def to_dict(self) -> dict[str, Any]:
        encr = next((t for t in self.proposal.transforms if t.type == 1), None)
        return {"spi_in": self.spi_in.hex(), "spi_out": self.spi_out.hex(),
                "encr": f"{Encr(encr.id).name}_{encr.key_length or 256}" if encr else None,
                "local_ts": list(self.local_ts), "remote_ts": list(self.remote_ts),
                "created": self.created.isoformat()}


@dataclass(frozen=True)
class RadiusGrant:
    """What an Access-Accept granted (RFC 2865 §5, RFC 2869 §5.16): policy input."""

    server: str
    filter_ids: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    session_timeout: int | None = None
    interim_interval: int | None = None
    framed_ip: str | None = None
    class_raw: tuple[bytes, ...] = ()  # echoed in accounting (RFC 2865 §5.25)
    user_name: str | None = None  # the User-Name the server returned: the authenticated name (RFC 2865 §5.1)

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(self.filter_ids) | frozenset(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "filter_ids": list(self.filter_ids), "classes": list(self.classes),
                "session_timeout": self.session_timeout, "interim_interval": self.interim_interval,
                "framed_ip": self.framed_ip, "user_name": self.user_name}


@dataclass(frozen=True)
class PeerAuth:
    """Who authenticated the IKE SA (RFC 7296 §2.15, RFC 4739): the certificate round, the EAP
    round, or both. ``identity`` is the EAP identity when EAP ran, else the certificate's.
    ``identity_verified`` is False when EAP ran but the Access-Accept returned no User-Name:
    the outer EAP-Identity is only a claim then (RFC 2865 §5.1, RFC 3748 §5.1), so nothing
    (INITIAL_CONTACT) may act on it."""

    identity: Identity
    cert: x509.Certificate | None
    issuer: x509.Certificate | None
    issuer_key_id: str
    rule: str | None
    scheme: str = ""
    eap_identity: str | None = None
    eap_method: str | None = None
    radius: RadiusGrant | None = None
    identity_verified: bool = True

    @property
    def serial(self) -> int:
        return self.cert.serial_number if self.cert is not None else -1

    @property
    def serial_hex(self) -> str | None:
        return format(self.cert.serial_number, "x") if self.cert is not None else None

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(m for m, on in (("pubkey", self.cert is not None), ("eap", self.eap_method)) if on)


@dataclass
class IkeSa:
    """One IKE SA where the peer is the original initiator."""

    spi_i: bytes
    spi_r: bytes
    suite: Suite
    keys: Keys
    ni: bytes
    nr: bytes
    init_request: bytes
    init_response: bytes
    peer: Address
    local_port: int
    peer_hashes: frozenset[int]
    created: datetime
    state: SaState = SaState.HALF_OPEN
    expected_id: int = 1
    cached_response: tuple[int, list[bytes]] | None = None
    fragmentation: bool = False  # RFC 7383 negotiated
    reassembly: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # number -> (first_inner, plain)
    reassembly_total: int = 0
    busy: bool = False
    my_next_id: int = 0
    pending: dict[int, asyncio.Future[bytes]] = field(default_factory=dict)
    auth: PeerAuth | None = None
    children: dict[bytes, ChildSa] = field(default_factory=dict)
    mobike: bool = False
    peer_behind_nat: bool = False
    established: datetime | None = None
    eap: Any = None  # gateway.responder.eap.EapState while EAP runs (RFC 7296 §2.16)
    first_auth: PeerAuth | None = None  # RFC 4739: the certificate round before the EAP round
    acct_session_id: str = ""
    virtual_ip: str | None = None
    auth_lifetime: int | None = None  # RFC 4478 AUTH_LIFETIME sent (Session-Timeout)

    @property
    def name(self) -> str:
        return f"{self.spi_i.hex()}_i:{self.spi_r.hex()}_r"

    def to_dict(self) -> dict[str, Any]:
        s = self.suite
        suite = (f"{Encr(s.encr).name}_{s.key_bits}/{Prf(s.prf).name}/{DhGroup(s.dh).name}")
        auth = self.auth
        return {
            "ike_sa": self.name, "state": self.state.value, "peer": f"{self.peer[0]}:{self.peer[1]}",
            "local_port": self.local_port, "suite": suite, "peer_behind_nat": self.peer_behind_nat,
            "peer_id": str(auth.identity) if auth else None,
            "serial": auth.serial_hex if auth else None,
            "issuer_key_id": auth.issuer_key_id if auth else None,
            "rule": auth.rule if auth else None,
            "auth": auth.scheme if auth else None,
            "eap_identity": auth.eap_identity if auth else None,
            "eap_method": auth.eap_method if auth else None,
            "radius": auth.radius.to_dict() if auth and auth.radius else None,
            "virtual_ip": self.virtual_ip,
            "established": self.established.isoformat() if self.established else None,
            "next_msgid": self.expected_id,
            "children": [c.to_dict() for c in self.children.values()],
        }
