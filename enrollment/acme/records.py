"""Database rows of the ACME server (``acme`` Alembic branch). Wire models live in ``messages``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class AcmeNonceRecord(SQLModel, table=True):
    """An issued, unredeemed Replay-Nonce (RFC 8555 §6.5); deleted when redeemed."""

    __tablename__ = "acme_nonces"

    nonce: str = Field(primary_key=True, max_length=64)
    expires: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))  # epoch seconds


class AcmeAccountRecord(SQLModel, table=True):
    __tablename__ = "acme_accounts"

    id: str = Field(primary_key=True, max_length=32)
    thumbprint: str = Field(max_length=64, unique=True)  # RFC 7638 SHA-256, base64url
    jwk: str  # JSON of the public JWK
    status: str = Field(default="valid", max_length=16)  # valid | deactivated | revoked
    contact: str = Field(default="[]")  # JSON list
    eab_kid: str | None = Field(default=None, max_length=64, index=True)
    created_at: datetime = Field(sa_column=_ts())


class AcmeOrderRecord(SQLModel, table=True):
    __tablename__ = "acme_orders"

    id: str = Field(primary_key=True, max_length=32)
    account_id: str = Field(max_length=32, index=True)
    status: str = Field(max_length=16)  # pending | ready | processing | valid | invalid
    identifiers: str  # JSON list of {"type", "value"}
    profile: str = Field(max_length=32)
    authz_ids: str  # JSON list
    expires: datetime = Field(sa_column=_ts())
    not_before: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    not_after: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    error: str | None = None  # JSON problem
    cert_serial: str | None = Field(default=None, max_length=42, index=True)
    replaces: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_column=_ts())


class AcmeAuthzRecord(SQLModel, table=True):
    __tablename__ = "acme_authzs"

    id: str = Field(primary_key=True, max_length=32)
    account_id: str = Field(max_length=32, index=True)
    order_id: str = Field(max_length=32, index=True)
    ident_type: str = Field(max_length=16)
    ident_value: str = Field(max_length=255)
    status: str = Field(max_length=16)  # pending | valid | invalid | deactivated | expired | revoked
    expires: datetime = Field(sa_column=_ts())
    evidence: str | None = None  # JSON: what a validator established (device id, EK fingerprint, ...)


class AcmeChallengeRecord(SQLModel, table=True):
    __tablename__ = "acme_challenges"

    id: str = Field(primary_key=True, max_length=32)
    authz_id: str = Field(max_length=32, index=True)
    type: str = Field(max_length=32)
    token: str = Field(max_length=64)
    status: str = Field(max_length=16)  # pending | processing | valid | invalid
    validated: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    error: str | None = None  # JSON problem


class AcmeEabKeyRecord(SQLModel, table=True):
    """An External Account Binding key (RFC 8555 §7.3.4) and the policy it grants."""

    __tablename__ = "acme_eab_keys"

    kid: str = Field(primary_key=True, max_length=64)
    hmac_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    profile: str = Field(max_length=32)
    identifiers: str  # JSON list of patterns ("*.example.test", "host.example.test", "10.0.0.0/8")
    expires: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    single_use: bool = False
    used_count: int = 0
    disabled: bool = False
    created_at: datetime = Field(sa_column=_ts())
