"""SQL access for SCEP's own tables (SQLAlchemy Core, works on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from ca.clock import as_utc
from ca.errors import ErrorKind, PKIError
from ca.store.db import Database
from enrollment.scep.records import ScepChallengeRecord, ScepTransactionRecord

CHALLENGES = ScepChallengeRecord.__table__  # type: ignore[attr-defined]
TRANSACTIONS = ScepTransactionRecord.__table__  # type: ignore[attr-defined]
PENDING, ISSUING, ISSUED, REJECTED = "pending", "issuing", "issued", "rejected"
# Statements of every PKCSReq, built once (building a Core statement per call costs more than SQLite running it)
_FIND = select(TRANSACTIONS).where(TRANSACTIONS.c.transaction_id == bindparam("b_tid"),
                                   TRANSACTIONS.c.key_sha256 == bindparam("b_key"))
_INSERT = insert(TRANSACTIONS)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class OneTimeChallenge:
    id: int
    secret: str
    profile: str
    expires_at: datetime


@dataclass(frozen=True)
class Transaction:
    id: int
    transaction_id: str
    key_sha256: str
    profile: str
    status: str
    subject: str
    csr_der: bytes
    signer_der: bytes
    cipher: str
    serial: int | None
    principal: str
    source: str
    created_at: datetime
    updated_at: datetime


def _transaction(row: object) -> Transaction:
    r = row._mapping  # type: ignore[attr-defined]
    return Transaction(r["id"], r["transaction_id"], r["key_sha256"], r["profile"], r["status"], r["subject"],
                       bytes(r["csr_der"]), bytes(r["signer_der"]), r["cipher"],
                       int(r["serial"], 16) if r["serial"] else None, r["principal"], r["source"],
                       as_utc(r["created_at"]), as_utc(r["updated_at"]))


class ScepRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- one-time challenge passwords ------------------------------------------------------

    def create_challenge(self, profile: str, ttl: timedelta, created_by: str, now: datetime) -> OneTimeChallenge:
        secret = secrets.token_urlsafe(24)  # 192 bits, PrintableString-safe except '_' handled below
        secret = secret.replace("_", "-")  # '-' is in PrintableString, '_' is not
        expires = now + ttl
        with self.db.write() as conn:
            result = conn.execute(insert(CHALLENGES).values(
                secret_sha256=secret_digest(secret), profile=profile, created_by=created_by[:255], created_at=now,
                expires_at=expires))
            new_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        return OneTimeChallenge(new_id, secret, profile, expires)

    def consume_challenge(self, secret: str, profile: str, now: datetime, transaction_id: str) -> bool:
        """Atomically mark an unused, unexpired challenge for ``profile`` used (rowcount == 1)."""
        with self.db.write() as conn:
            result = conn.execute(update(CHALLENGES).where(
                CHALLENGES.c.secret_sha256 == secret_digest(secret), CHALLENGES.c.profile == profile,
                CHALLENGES.c.used_at.is_(None), CHALLENGES.c.expires_at > now,
            ).values(used_at=now, used_by=transaction_id[:128]))
            return result.rowcount == 1

    # -- transactions -------------------------------------------------------------------------

    def find(self, transaction_id: str, key_sha256: str) -> Transaction | None:
        with self.db.read() as conn:
            row = conn.execute(_FIND, {"b_tid": transaction_id, "b_key": key_sha256}).first()
        return _transaction(row) if row else None

    def get(self, transaction_id: str) -> list[Transaction]:
        with self.db.read() as conn:
            rows = conn.execute(select(TRANSACTIONS).where(TRANSACTIONS.c.transaction_id == transaction_id)).all()
        return [_transaction(r) for r in rows]

    def record(self, *, transaction_id: str, key_sha256: str, profile: str, status: str, subject: str,
               csr_der: bytes, signer_der: bytes, cipher: str, serial: int | None, principal: str, source: str,
               now: datetime) -> bool:
        """Insert a transaction; False when (transactionID, key) is already taken."""
        try:
            with self.db.write() as conn:
                conn.execute(_INSERT, {
                    "transaction_id": transaction_id, "key_sha256": key_sha256, "profile": profile, "status": status,
                    "subject": subject[:1024], "csr_der": csr_der, "signer_der": signer_der, "cipher": cipher,
                    "serial": format(serial, "x") if serial is not None else None, "principal": principal[:255],
                    "source": source[:255], "created_at": now, "updated_at": now})
            return True
        except IntegrityError:
            return False

    def reopen(self, row_id: int, from_status: str, *, status: str, profile: str, subject: str, csr_der: bytes,
               signer_der: bytes, cipher: str, serial: int | None, principal: str, source: str, now: datetime,
               **_ignored: object) -> bool:
        """Reuse a finished transaction row for a new request with the same transactionID and key."""
        with self.db.write() as conn:
            result = conn.execute(update(TRANSACTIONS).where(
                TRANSACTIONS.c.id == row_id, TRANSACTIONS.c.status == from_status).values(
                status=status, profile=profile, subject=subject[:1024], csr_der=csr_der, signer_der=signer_der,
                cipher=cipher,
                serial=format(serial, "x") if serial is not None else None, principal=principal[:255],
                source=source[:255], updated_at=now))
            return result.rowcount == 1

    def transition(self, row_id: int, from_status: str, to_status: str, now: datetime,
                   serial: int | None = None, principal: str | None = None) -> bool:
        """Conditional status change (only one approver wins)."""
        values: dict[str, object] = {"status": to_status, "updated_at": now}
        if serial is not None:
            values["serial"] = format(serial, "x")
        if principal is not None:
            values["principal"] = principal[:255]
        with self.db.write() as conn:
            result = conn.execute(update(TRANSACTIONS).where(TRANSACTIONS.c.id == row_id,
                                                             TRANSACTIONS.c.status == from_status).values(**values))
            return result.rowcount == 1

    def pending(self, limit: int = 1000) -> list[Transaction]:
        with self.db.read() as conn:
            rows = conn.execute(select(TRANSACTIONS).where(TRANSACTIONS.c.status == PENDING)
                                .order_by(TRANSACTIONS.c.created_at).limit(limit)).all()
        return [_transaction(r) for r in rows]

    def by_id(self, row_id: int) -> Transaction:
        with self.db.read() as conn:
            row = conn.execute(select(TRANSACTIONS).where(TRANSACTIONS.c.id == row_id)).first()
        if row is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no SCEP transaction {row_id}")
        return _transaction(row)
