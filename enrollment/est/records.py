"""Database rows of the EST server (``…Record``): MDM device registrations and enrollments
waiting for manual approval."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class EstRegistrationRecord(SQLModel, table=True):
    """One MDM pre-authorised device: what it may obtain, and its one-time secret (SHA-256 only).

    ``used`` is set by a conditional UPDATE (claim); ``serial`` once the certificate exists.
    A claim without a serial older than the claim timeout may be claimed again (crash safety)."""

    __tablename__ = "est_registrations"

    device_id: str = Field(primary_key=True, max_length=255)
    profile: str = Field(max_length=32)
    sans: str = Field(default="[]")  # JSON list of san_text() values
    ek_fingerprint: str | None = Field(default=None, max_length=128)
    secret_sha256: str = Field(max_length=64)
    expires_at: datetime = Field(sa_column=_ts())
    used: bool = Field(default=False)
    claim_id: str | None = Field(default=None, max_length=64)
    used_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    used_by: str | None = Field(default=None, max_length=255)
    serial: str | None = Field(default=None, max_length=42)
    created_at: datetime = Field(sa_column=_ts())
    created_by: str = Field(default="", max_length=255)


class EstPendingRecord(SQLModel, table=True):
    """An enrollment held for manual approval (RFC 7030 §4.2.3: 202 + Retry-After, client retries)."""

    __tablename__ = "est_pending"

    id: str = Field(primary_key=True, max_length=32)
    request_key: str = Field(max_length=64, unique=True)  # SHA-256 of principal + label + CSR DER
    label: str = Field(max_length=64)
    principal: str = Field(max_length=255)
    device_id: str | None = Field(default=None, max_length=255)
    subject: str = Field(default="", max_length=1024)
    sans: str = Field(default="[]")
    csr_der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending | approved | rejected | issued
    serial: str | None = Field(default=None, max_length=42)
    created_at: datetime = Field(sa_column=_ts())
    decided_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    decided_by: str | None = Field(default=None, max_length=255)
