"""SQL persistence of posture nonces and the evidence/verdict history (Alembic branch ``posture``).

A nonce is stored only as its SHA-256 and redeemed by a conditional ``UPDATE … WHERE consumed_at IS
NULL AND expires_at > now`` checked by rowcount: one redemption, whatever the number of replicas.
Every verdict (from evidence, an operator or an automated input) is a new row; the device's posture
is its newest row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Integer, LargeBinary, String, Table, Text, delete, insert, select, update
from sqlmodel import Field, SQLModel

from ca.store.db import Database
from enrollment.posture.policy import Verdict

PURGE_GRACE_SECONDS = 3600


class PostureNonceRecord(SQLModel, table=True):
    __tablename__ = "posture_nonces"

    nonce_sha256: bytes = Field(sa_column=Column(LargeBinary, primary_key=True))
    ak_serial: str = Field(max_length=48)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    consumed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class PostureEvidenceRecord(SQLModel, table=True):
    __tablename__ = "posture_evidence"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    device_id: str = Field(max_length=255)
    ak_serial: str = Field(default="", max_length=48)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    verdict: str = Field(max_length=16)
    reasons: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    device_class: str = Field(default="", max_length=64)
    facts: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    pcrs: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    quote: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    signature: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    event_log_sha256: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    origin: str = Field(max_length=16)  # evidence | operator | automated
    principal: str = Field(default="", max_length=128)
    issued_serial: str | None = Field(default=None, sa_column=Column(String(48), nullable=True))


NONCES: Table = PostureNonceRecord.__table__  # type: ignore[attr-defined]
EVIDENCE: Table = PostureEvidenceRecord.__table__  # type: ignore[attr-defined]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite returns naive UTC


@dataclass(frozen=True)
class PostureRecord:
    """One verdict of a device (domain object of a posture_evidence row)."""

    id: int
    device_id: str
    verdict: Verdict
    reasons: tuple[str, ...]
    device_class: str
    received_at: datetime
    expires_at: datetime
    origin: str
    principal: str
    ak_serial: str
    facts: dict[str, Any]
    pcrs: dict[str, dict[str, str]]
    event_log_sha256: str | None
    issued_serial: str | None

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "device": self.device_id, "verdict": self.verdict.value, "reasons": list(self.reasons),
                "deviceClass": self.device_class, "received": self.received_at.isoformat(),
                "expires": self.expires_at.isoformat(), "origin": self.origin, "principal": self.principal,
                "akSerial": self.ak_serial, "facts": self.facts, "pcrs": self.pcrs,
                "eventLogSha256": self.event_log_sha256, "issuedSerial": self.issued_serial}


class SqlPostureStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- nonces -----------------------------------------------------------------------------------
    def add_nonce(self, nonce: bytes, ak_serial: str, now: datetime, expires: datetime) -> None:
        with self.db.write() as conn:
            conn.execute(insert(NONCES), {"nonce_sha256": hashlib.sha256(nonce).digest(), "ak_serial": ak_serial,
                                          "created_at": now, "expires_at": expires})
            cutoff = datetime.fromtimestamp(now.timestamp() - PURGE_GRACE_SECONDS, UTC)
            conn.execute(delete(NONCES).where(NONCES.c.expires_at < cutoff))

    def redeem_nonce(self, nonce: bytes, ak_serial: str, now: datetime) -> bool:
        """True exactly once for an unexpired nonce issued to this AK."""
        with self.db.write() as conn:
            result = conn.execute(update(NONCES).where(
                NONCES.c.nonce_sha256 == hashlib.sha256(nonce).digest(), NONCES.c.ak_serial == ak_serial,
                NONCES.c.consumed_at.is_(None), NONCES.c.expires_at > now).values(consumed_at=now))
            return result.rowcount == 1

    # -- verdicts ---------------------------------------------------------------------------------
    def add(self, row: dict[str, Any]) -> int:
        values = dict(row)
        for key in ("reasons", "facts", "pcrs"):
            if key in values and not isinstance(values[key], str):
                values[key] = json.dumps(values[key], sort_keys=True)
        with self.db.write() as conn:
            result = conn.execute(insert(EVIDENCE), values)
            inserted = result.inserted_primary_key
            assert inserted is not None
            return int(inserted[0])

    def set_issued(self, record_id: int, serial_hex: str) -> None:
        with self.db.write() as conn:
            conn.execute(update(EVIDENCE).where(EVIDENCE.c.id == record_id).values(issued_serial=serial_hex))

    def latest(self, device_id: str) -> PostureRecord | None:
        rows = self.history(device_id, 1)
        return rows[0] if rows else None

    def history(self, device_id: str, limit: int = 20) -> list[PostureRecord]:
        with self.db.read() as conn:
            rows = conn.execute(select(EVIDENCE).where(EVIDENCE.c.device_id == device_id)
                                .order_by(EVIDENCE.c.id.desc()).limit(limit)).all()
        return [PostureRecord(
            id=r.id, device_id=r.device_id, verdict=Verdict(r.verdict), reasons=tuple(json.loads(r.reasons)),
            device_class=r.device_class, received_at=_aware(r.received_at), expires_at=_aware(r.expires_at),
            origin=r.origin, principal=r.principal, ak_serial=r.ak_serial, facts=json.loads(r.facts),
            pcrs=json.loads(r.pcrs), event_log_sha256=r.event_log_sha256, issued_serial=r.issued_serial)
            for r in rows]
