"""Database rows (``…Record``) of the CA core. Wire models and domain objects live elsewhere.

Serials are stored as lower-case hex text: 159-bit random serials do not fit in BIGINT.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class CertificateRecord(SQLModel, table=True):
    __tablename__ = "certificates"
    __table_args__ = (Index("ix_certificates_issuer_status", "issuer_id", "status"),)

    serial: str = Field(primary_key=True, max_length=42)
    issuer_id: str = Field(max_length=32)
    subject: str = Field(max_length=1024)
    sans: str = Field(default="[]")  # JSON list of san_text()
    profile: str = Field(max_length=32, index=True)
    not_before: datetime = Field(sa_column=_ts())
    not_after: datetime = Field(sa_column=_ts(index=True))
    status: str = Field(default="valid", max_length=16)  # valid | revoked | hold
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    revocation_reason: str | None = Field(default=None, max_length=32)
    invalidity_date: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    crl_entry_der: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    requester: str = Field(default="", max_length=255)
    channel: str = Field(default="", max_length=32)
    device_id: str | None = Field(default=None, max_length=255, index=True)
    ek_fingerprint: str | None = Field(default=None, max_length=128, index=True)
    created_at: datetime = Field(sa_column=_ts())


class RevocationRecord(SQLModel, table=True):
    __tablename__ = "revocations"

    id: int | None = Field(default=None, primary_key=True)
    serial: str = Field(max_length=42, index=True)
    issuer_id: str = Field(max_length=32)
    reason: str = Field(max_length=32)
    revoked_at: datetime = Field(sa_column=_ts())
    actor: str = Field(max_length=255)
    channel: str = Field(max_length=32)
    released_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class AuditEventRecord(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_ts(index=True))
    actor: str = Field(max_length=255)
    action: str = Field(max_length=64, index=True)
    channel: str = Field(max_length=32)
    source: str = Field(default="", max_length=255)
    serial: str | None = Field(default=None, max_length=42, index=True)
    detail: str = Field(default="{}")


class OutboxEventRecord(SQLModel, table=True):
    """Revocation events waiting for delivery; written in the revocation's own transaction."""

    __tablename__ = "outbox_events"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=32)
    issuer_id: str = Field(max_length=32)
    serial: str = Field(max_length=42, index=True)
    payload: str
    created_at: datetime = Field(sa_column=_ts())


class GatewayRecord(SQLModel, table=True):
    __tablename__ = "gateways"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    kind: str = Field(max_length=16)  # vici | responder | webhook
    url: str = Field(max_length=1024)
    enabled: bool = Field(default=True)
    created_at: datetime = Field(sa_column=_ts())
    last_success_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_error: str | None = Field(default=None, max_length=1024)


class DeliveryRecord(SQLModel, table=True):
    """One event to one gateway; at-least-once, idempotent on (issuer, serial) at the gateway."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("event_id", "gateway_id"),
                      Index("ix_deliveries_pending", "status", "next_attempt_at"))

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, index=True)
    gateway_id: int = Field(foreign_key="gateways.id")
    status: str = Field(default="pending", max_length=16)  # pending | delivered | failed
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_error: str | None = Field(default=None, max_length=1024)
    created_at: datetime = Field(sa_column=_ts())


class DeviceRecord(SQLModel, table=True):
    __tablename__ = "devices"

    device_id: str = Field(primary_key=True, max_length=255)
    ek_fingerprint: str | None = Field(default=None, max_length=128, index=True)
    blocked: bool = Field(default=False)
    blocked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    block_reason: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(sa_column=_ts())


class AdminTokenRecord(SQLModel, table=True):
    """Admin API credentials; only a SHA-256 of the token is stored."""

    __tablename__ = "admin_tokens"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    role: str = Field(max_length=16)  # viewer | revoker | admin
    token_sha256: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_column=_ts())
    disabled: bool = Field(default=False)


class CertificateUserRecord(SQLModel, table=True):
    """The identity-provider user a certificate was issued to (``ca.model.UserIdentity``);
    written in the certificate's own transaction."""

    __tablename__ = "certificate_users"
    __table_args__ = (Index("ix_certificate_users_identity", "issuer", "subject"),)

    serial: str = Field(primary_key=True, max_length=42, foreign_key="certificates.serial")
    issuer: str = Field(max_length=255)
    subject: str = Field(max_length=255)
    uri: str = Field(max_length=1024, index=True)
    provider: str = Field(default="", max_length=64)
    email: str | None = Field(default=None, max_length=320, index=True)  # lower-cased
    groups: str = Field(default="[]")  # JSON list
    roles: str = Field(default="[]")  # JSON list
    device: str | None = Field(default=None, max_length=255)
    session: str | None = Field(default=None, max_length=255, index=True)
    created_at: datetime = Field(sa_column=_ts())
