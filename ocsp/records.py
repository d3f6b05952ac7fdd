"""Database rows of the ocsp package (``…Record``): published CRLs, leases, OCSP signer certs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable)


class CrlPublicationRecord(SQLModel, table=True):
    """One published CRL (RFC 5280 §5). Full and delta CRLs of an issuer share one number sequence
    (§5.2.3); the unique constraint makes a second concurrent publisher fail instead of reusing one."""

    __tablename__ = "ocsp_crl_publications"
    __table_args__ = (UniqueConstraint("issuer_id", "crl_number"),
                      Index("ix_ocsp_crl_latest", "issuer_id", "kind", "crl_number"))

    id: int | None = Field(default=None, primary_key=True)
    issuer_id: str = Field(max_length=32)
    kind: str = Field(max_length=8)  # full | delta
    crl_number: int
    base_number: int | None = None  # delta: the deltaCRLIndicator; full: None
    is_base: bool = Field(default=False)  # full CRLs that deltas are computed against
    cut_at: datetime = Field(sa_column=_ts())  # revocations at or after this are not in a base
    feed_cursor: int = Field(default=0)  # outbox id covered by this CRL
    this_update: datetime = Field(sa_column=_ts())
    next_update: datetime = Field(sa_column=_ts())
    entries: int = Field(default=0)
    sha256: str = Field(max_length=64)
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=_ts())


class LeaseRecord(SQLModel, table=True):
    """A named lease: one replica at a time publishes CRLs / rotates signer certs."""

    __tablename__ = "ocsp_leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime = Field(sa_column=_ts())


class OcspSignerCertRecord(SQLModel, table=True):
    """Delegated OCSP signer certificates (RFC 6960 §4.2.2.2); the newest valid one per issuer signs."""

    __tablename__ = "ocsp_signer_certs"

    id: int | None = Field(default=None, primary_key=True)
    issuer_id: str = Field(max_length=32, index=True)
    serial: str = Field(max_length=42, unique=True)
    not_after: datetime = Field(sa_column=_ts())
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=_ts())
