"""Database rows of the console (its own Alembic branch, ``console``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel


def _ts(index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=False, index=index)


class ConsoleSessionRecord(SQLModel, table=True):
    """A signed-in person. Only a SHA-256 of the cookie value is stored, so a copy of the
    database does not hand out sessions; every replica reads the same rows."""

    __tablename__ = "console_sessions"

    id_sha256: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=255)
    role: str = Field(max_length=16)
    method: str = Field(max_length=16)  # token | oidc
    source: str = Field(default="", max_length=255)
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_ts())
    last_seen_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))


class ConsoleLoginRecord(SQLModel, table=True):
    """A sign-in at the identity provider under way: ``state``, ``nonce`` and the PKCE verifier
    bound to the browser's pre-login cookie (only its SHA-256 is stored); used once."""

    __tablename__ = "console_logins"

    id_sha256: str = Field(primary_key=True, max_length=64)
    provider: str = Field(max_length=64)
    state: str = Field(max_length=64)
    nonce: str = Field(max_length=64)
    code_verifier: str = Field(max_length=128)
    next_path: str = Field(default="", max_length=300)
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))
