"""Wire models of the admin API (serials are hex strings on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ca.model import CertificateInfo

Hex = str


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CertificateOut(BaseModel):
    serial: Hex
    issuer: str
    subject: str
    sans: list[str]
    profile: str
    status: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    reason: str | None = None
    device_id: str | None = None
    ek_fingerprint: str | None = None
    channel: str = ""
    requester: str = ""

    @classmethod
    def of(cls, info: CertificateInfo) -> CertificateOut:
        return cls(serial=info.serial_hex, issuer=info.issuer_id, subject=info.subject, sans=list(info.sans),
                   profile=info.profile, status=info.status.value, not_before=info.not_before,
                   not_after=info.not_after, revoked_at=info.revoked_at,
                   reason=info.revocation_reason.name if info.revocation_reason else None,
                   device_id=info.device_id, ek_fingerprint=info.ek_fingerprint, channel=info.channel,
                   requester=info.requester)


class CertificateList(BaseModel):
    items: list[CertificateOut]
    count: int


class RevocationRequest(Wire):
    """Targets are the union of the selectors; ``profile`` needs a narrowing filter or ``all_of_profile``."""

    serials: list[Hex] = Field(default_factory=list, max_length=100_000)
    device_id: str | None = Field(default=None, max_length=255)
    identity: str | None = Field(default=None, max_length=255, description="e.g. alice@example.test, "
                                 "email:alice@example.test, DNS:h1.example.test")
    user: str | None = Field(default=None, max_length=1024, description="identity-provider user: "
                             "<iss>#<sub>, sub or email (certificates from /user/v1)")
    profile: str | None = Field(default=None, max_length=32)
    subject_contains: str | None = Field(default=None, max_length=255)
    san_contains: str | None = Field(default=None, max_length=255)
    expires_before: datetime | None = None
    expires_after: datetime | None = None
    all_of_profile: bool = False
    reason: str = Field(max_length=32, description="RFC 5280 CRLReason name, e.g. keyCompromise")
    hold: bool = False
    block_device: bool = False
    dry_run: bool = False
    invalidity_date: datetime | None = None


class RevocationResult(BaseModel):
    dry_run: bool
    reason: str
    targets: list[CertificateOut]
    revoked: list[Hex] = []
    unchanged: list[Hex] = []
    not_found: list[Hex] = []
    blocked_devices: list[str] = []
    gateways: list[str] = []  # enabled gateways that get a push for each revoked serial
    live_sas: dict[Hex, list[str]] = {}  # dry run: serial -> gateways holding a live SA of it (when known)


class DeliveryQuery(Wire):
    serials: list[Hex] = Field(default_factory=list, max_length=100_000)
    status: str | None = Field(default=None, max_length=16)
    gateway: str | None = Field(default=None, max_length=128)
    limit: int = Field(default=1000, ge=1, le=100_000)


class DeliveryOut(BaseModel):
    serial: Hex
    event_id: str
    kind: str
    gateway: str
    gateway_kind: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_error: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> DeliveryOut:
        return cls.model_validate({k: row.get(k) for k in cls.model_fields})


class GatewayIn(Wire):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    kind: str = Field(pattern=r"^(vici|responder|webhook)$")
    url: str = Field(min_length=1, max_length=1024)


class GatewayPatch(Wire):
    enabled: bool


class GatewayOut(BaseModel):
    id: int
    name: str
    kind: str
    url: str
    enabled: bool
    created_at: datetime | None = None
    pending: int = 0
    oldest_pending: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> GatewayOut:
        return cls.model_validate({k: row.get(k) for k in cls.model_fields if k in row})


class GatewayHealth(GatewayOut):
    reachable: bool | None = None  # None: this kind cannot be probed (webhook)
    live_peers: int | None = None  # distinct peer identities with an IKE_SA now (vici, responder)


class DeviceBlock(Wire):
    reason: str | None = Field(default=None, max_length=255)


class DeviceOut(BaseModel):
    device_id: str
    ek_fingerprint: str | None = None
    blocked: bool
    blocked_at: datetime | None = None
    block_reason: str | None = None


class TokenIn(Wire):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    role: str = Field(pattern=r"^(viewer|revoker|admin)$")


class TokenOut(BaseModel):
    name: str
    role: str
    created_at: datetime | None = None
    disabled: bool = False
    token: str | None = None  # only in the response that creates it


class WhoAmI(BaseModel):
    name: str
    role: str
    method: str
    source: str
