"""Database rows of the response package (``…Record``); migrations in ``response/migrations``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable)


class IncidentRecord(SQLModel, table=True):
    """What one rule made of one alert: executed, pending approval, rejected, dry run, ..."""

    __tablename__ = "response_incidents"
    __table_args__ = (Index("ix_response_incidents_alert", "source", "fingerprint", "rule"),
                      Index("ix_response_incidents_status", "status", "counted_at"))

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    source: str = Field(max_length=64)
    format: str = Field(max_length=32)
    fingerprint: str = Field(max_length=128)
    rule: str = Field(max_length=64)
    action: str = Field(max_length=16)  # hold | revoke | block
    reason: str | None = Field(default=None, max_length=32)
    block_device: bool = Field(default=False)
    release_on_resolve: bool = Field(default=False)
    target_kind: str = Field(max_length=16)
    target_value: str = Field(max_length=255)
    # executing | executed | pending | approved | rejected | dry-run | no-targets | released | failed | resolved
    status: str = Field(max_length=16)
    serials: str = Field(default="[]")  # JSON: hex serials the plan names
    devices: str = Field(default="[]")  # JSON: device ids the plan names
    changed: str = Field(default="[]")  # JSON: hex serials actually changed
    cert_count: int = Field(default=0)  # counted against the guard
    device_count: int = Field(default=0)
    counted_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    guard: str | None = Field(default=None, max_length=255)  # which limit parked it
    alert: str = Field(default="{}")  # JSON: the alert's fields (bounded)
    decided_by: str | None = Field(default=None, max_length=255)
    decided_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    note: str | None = Field(default=None, max_length=1024)
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    error: str | None = Field(default=None, max_length=1024)


class MessageIdRecord(SQLModel, table=True):
    """Message ids seen: Standard Webhooks ids, digests of Keylime messages (replay protection,
    shared by every replica)."""

    __tablename__ = "response_message_ids"

    source: str = Field(primary_key=True, max_length=64)
    msg_id: str = Field(primary_key=True, max_length=128)
    seen_at: datetime = Field(sa_column=_ts())


class GuardLockRecord(SQLModel, table=True):
    """One row locked while a replica counts and reserves blast-radius budget."""

    __tablename__ = "response_guard_lock"

    name: str = Field(primary_key=True, max_length=32)
