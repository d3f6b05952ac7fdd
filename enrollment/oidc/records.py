"""Database rows of the OIDC package: tokens already used (an ID token is redeemed once, a
logout token's ``jti`` is accepted once), kept until the token could no longer be valid."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel


class OidcTokenUseRecord(SQLModel, table=True):
    """The primary key makes redemption race-free across replicas: of two inserts one fails."""

    __tablename__ = "oidc_token_uses"

    token_sha256: str = Field(primary_key=True, max_length=64)  # SHA-256 of the token (or iss + jti)
    kind: str = Field(max_length=16)  # id_token | logout
    provider: str = Field(max_length=64)
    subject: str = Field(default="", max_length=255)
    serial: str | None = Field(default=None, max_length=42)
    used_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
