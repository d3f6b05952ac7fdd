"""Database rows of the SCEP server (``scep_`` tables; Alembic branch ``scep``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class ScepChallengeRecord(SQLModel, table=True):
    """A one-time challenge password; only its SHA-256 is stored. Consumed by a conditional UPDATE."""

    __tablename__ = "scep_challenges"

    id: int | None = Field(default=None, primary_key=True)
    secret_sha256: str = Field(max_length=64, unique=True)
    profile: str = Field(max_length=32)
    created_by: str = Field(max_length=255)
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    used_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    used_by: str | None = Field(default=None, max_length=128)  # transactionID that consumed it


class ScepTransactionRecord(SQLModel, table=True):
    """One enrollment transaction (RFC 8894 §3.2.1.1), keyed by transactionID and signer key."""

    __tablename__ = "scep_transactions"
    __table_args__ = (UniqueConstraint("transaction_id", "key_sha256", name="uq_scep_transactions_tid_key"),)

    id: int | None = Field(default=None, primary_key=True)
    transaction_id: str = Field(max_length=128, index=True)
    key_sha256: str = Field(max_length=64)  # SHA-256 of the requester's SubjectPublicKeyInfo
    profile: str = Field(max_length=32)
    status: str = Field(max_length=16, index=True)  # pending | issuing | issued | rejected
    subject: str = Field(max_length=1024)
    csr_der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    signer_der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    cipher: str = Field(max_length=32)
    serial: str | None = Field(default=None, max_length=42)
    principal: str = Field(max_length=255)
    source: str = Field(default="", max_length=255)
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
