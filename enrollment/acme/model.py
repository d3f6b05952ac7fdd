"""Domain objects of the ACME server (frozen dataclasses built from ``…Record`` rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


@dataclass(frozen=True)
class Identifier:
    type: str  # dns | ip
    value: str

    def wire(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclass(frozen=True)
class Account:
    id: str
    thumbprint: str
    jwk: dict[str, Any]
    status: str
    contact: list[str]
    eab_kid: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Account:
        return cls(row.id, row.thumbprint, json.loads(row.jwk), row.status, json.loads(row.contact), row.eab_kid,
                   aware(row.created_at))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Order:
    id: str
    account_id: str
    status: str
    identifiers: tuple[Identifier, ...]
    profile: str
    authz_ids: tuple[str, ...]
    expires: datetime
    not_before: datetime | None
    not_after: datetime | None
    error: dict[str, Any] | None
    cert_serial: str | None
    replaces: str | None

    @classmethod
    def from_row(cls, row: Any) -> Order:
        return cls(row.id, row.account_id, row.status, tuple(Identifier(**i) for i in json.loads(row.identifiers)),
                   row.profile, tuple(json.loads(row.authz_ids)), aware(row.expires),  # type: ignore[arg-type]
                   aware(row.not_before), aware(row.not_after), _loads(row.error), row.cert_serial, row.replaces)


@dataclass(frozen=True)
class Challenge:
    id: str
    authz_id: str
    type: str
    token: str
    status: str
    validated: datetime | None
    error: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Any) -> Challenge:
        return cls(row.id, row.authz_id, row.type, row.token, row.status, aware(row.validated), _loads(row.error))


@dataclass(frozen=True)
class Authz:
    id: str
    account_id: str
    order_id: str
    identifier: Identifier
    status: str
    expires: datetime
    evidence: dict[str, Any] | None = None

    @property
    def wildcard(self) -> bool:
        return self.identifier.value.startswith("*.")

    @classmethod
    def from_row(cls, row: Any) -> Authz:
        return cls(row.id, row.account_id, row.order_id, Identifier(row.ident_type, row.ident_value), row.status,
                   aware(row.expires), _loads(row.evidence))  # type: ignore[arg-type]


@dataclass(frozen=True)
class EabKey:
    kid: str
    hmac_key: bytes
    profile: str
    identifiers: tuple[str, ...]
    expires: datetime | None
    single_use: bool
    used_count: int
    disabled: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> EabKey:
        return cls(row.kid, bytes(row.hmac_key), row.profile, tuple(json.loads(row.identifiers)), aware(row.expires),
                   bool(row.single_use), int(row.used_count), bool(row.disabled),
                   aware(row.created_at))  # type: ignore[arg-type]
