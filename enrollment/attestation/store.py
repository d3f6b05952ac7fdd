"""SQL persistence of credential-activation challenges (the ``attestation`` Alembic branch).

:class:`SqlCredentialChallengeRepository` implements
:class:`enrollment.attestation.repository.ChallengeRepository` for
:class:`~enrollment.attestation.credential.CredentialChallenge`.  Single use is a conditional
``UPDATE … SET consumed_at = :now WHERE id = :id AND consumed_at IS NULL`` checked by rowcount, so two
concurrent ``finish`` calls (threads or replicas, SQLite or PostgreSQL) cannot both redeem one secret.
Only the SHA-256 of the activation secret is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, LargeBinary, Table, delete, insert, select, update
from sqlmodel import Field, SQLModel

from ca.store.db import Database
from enrollment.attestation.credential import CredentialChallenge

PURGE_EVERY = 200
PURGE_GRACE_SECONDS = 24 * 3600


class AttestationChallengeRecord(SQLModel, table=True):
    """One credential-activation challenge (TPM 2.0 Part 1 §24); consumed at most once."""

    __tablename__ = "attestation_challenges"

    id: str = Field(primary_key=True, max_length=64)
    ek_certificate_der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ak_public: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ak_name: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    secret_sha256: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    principal: str = Field(default="", max_length=128)  # EAB key id that authorised the start
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    consumed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


CHALLENGES: Table = AttestationChallengeRecord.__table__  # type: ignore[attr-defined]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite returns naive UTC


class SqlCredentialChallengeRepository:
    """ChallengeRepository[CredentialChallenge] on the deployment database."""

    def __init__(self, db: Database, principal: str = "") -> None:
        self.db = db
        self.principal = principal
        self._added = 0

    def with_principal(self, principal: str) -> SqlCredentialChallengeRepository:
        """The same store, recording ``principal`` on challenges added through it."""
        return SqlCredentialChallengeRepository(self.db, principal)

    def add(self, challenge: CredentialChallenge) -> None:
        """Insert (a duplicate id raises IntegrityError); now and then purge long-expired rows."""
        with self.db.write() as conn:
            conn.execute(insert(CHALLENGES), {
                "id": challenge.id, "ek_certificate_der": challenge.ek_certificate_der,
                "ak_public": challenge.ak_public, "ak_name": challenge.ak_name,
                "secret_sha256": challenge.secret_sha256, "principal": self.principal[:128],
                "created_at": challenge.created_at, "expires_at": challenge.expires_at})
            self._added += 1
            if self._added % PURGE_EVERY == 0:
                cutoff = datetime.fromtimestamp(challenge.created_at.timestamp() - PURGE_GRACE_SECONDS, UTC)
                conn.execute(delete(CHALLENGES).where(CHALLENGES.c.expires_at < cutoff))

    def get(self, challenge_id: str) -> CredentialChallenge | None:
        """The challenge, consumed or not."""
        if not isinstance(challenge_id, str) or not 0 < len(challenge_id) <= 64:
            return None
        with self.db.read() as conn:
            row = conn.execute(select(CHALLENGES).where(CHALLENGES.c.id == challenge_id)).first()
        if row is None:
            return None
        return CredentialChallenge(
            id=row.id, ek_certificate_der=bytes(row.ek_certificate_der), ak_public=bytes(row.ak_public),
            ak_name=bytes(row.ak_name), secret_sha256=bytes(row.secret_sha256),
            created_at=_aware(row.created_at), expires_at=_aware(row.expires_at))

    def principal_of(self, challenge_id: str) -> str | None:
        """Who started the challenge (EAB key id), for audit."""
        with self.db.read() as conn:
            row = conn.execute(select(CHALLENGES.c.principal).where(CHALLENGES.c.id == challenge_id)).first()
        return None if row is None else str(row.principal)

    def consume(self, challenge_id: str, now: datetime) -> bool:
        """Atomic compare-and-set: exactly one caller sees True."""
        with self.db.write() as conn:
            result = conn.execute(update(CHALLENGES).where(
                CHALLENGES.c.id == challenge_id, CHALLENGES.c.consumed_at.is_(None)).values(consumed_at=now))
            return result.rowcount == 1
