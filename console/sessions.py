"""Server-side console sessions in the deployment's database (multi-replica safe: every replica
reads the same rows). The cookie carries 256 random bits; the table keeps only their SHA-256.
A session ends after ``idle`` without a request, after ``max_age`` in any case, on sign-out, as
soon as the admin token it came from is disabled or changes role, and (identity-provider sessions)
when the person signs out at the provider (back-channel logout, :func:`end_sessions_of`)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from ca.clock import as_utc
from ca.model import UserIdentity
from ca.ports import CoreServices
from ca.store.db import Database
from console.records import ConsoleLoginRecord, ConsoleSessionRecord

SESSIONS = ConsoleSessionRecord.__table__  # type: ignore[attr-defined]
LOGINS = ConsoleLoginRecord.__table__  # type: ignore[attr-defined]
TOUCH_EVERY = timedelta(seconds=15)  # last_seen_at is written at most this often per session
MAX_COOKIE = 128


@dataclass(frozen=True)
class ConsoleSession:
    name: str
    role: str
    method: str
    csrf: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SqlSessionStore:
    def __init__(self, db: Database, idle: timedelta, max_age: timedelta) -> None:
        self.db, self.idle, self.max_age = db, idle, max_age

    def create(self, name: str, role: str, method: str, source: str, now: datetime,
               max_age: timedelta | None = None) -> tuple[str, ConsoleSession]:
        """A new session: (cookie value, session), ending after ``max_age`` (at most the store's).
        Expired sessions are purged on the way."""
        session_id = secrets.token_urlsafe(32)
        lifetime = min(max_age, self.max_age) if max_age is not None else self.max_age
        s = ConsoleSession(name[:255], role, method, secrets.token_urlsafe(32), now, now, now + lifetime)
        with self.db.write() as conn:
            conn.execute(delete(SESSIONS).where(SESSIONS.c.expires_at < now))
            conn.execute(delete(SESSIONS).where(SESSIONS.c.last_seen_at < now - self.idle))
            conn.execute(insert(SESSIONS).values(id_sha256=_digest(session_id), name=s.name, role=role, method=method,
                                                 source=source[:255], csrf=s.csrf, created_at=now, last_seen_at=now,
                                                 expires_at=s.expires_at))
        return session_id, s

    def get(self, session_id: str | None, now: datetime) -> ConsoleSession | None:
        """The live session for a cookie value (touching its idle timer), else None."""
        if not session_id or len(session_id) > MAX_COOKIE:
            return None
        key = _digest(session_id)
        with self.db.read() as conn:
            row = conn.execute(select(SESSIONS).where(SESSIONS.c.id_sha256 == key)).first()
        if row is None:
            return None
        last_seen, expires = as_utc(row.last_seen_at), as_utc(row.expires_at)
        if now >= expires or now - last_seen >= self.idle:
            self.delete(session_id)
            return None
        if now - last_seen >= TOUCH_EVERY:
            with self.db.write() as conn:
                conn.execute(update(SESSIONS).where(SESSIONS.c.id_sha256 == key).values(last_seen_at=now))
            last_seen = now
        return ConsoleSession(row.name, row.role, row.method, row.csrf, as_utc(row.created_at), last_seen, expires)

    def delete(self, session_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(SESSIONS).where(SESSIONS.c.id_sha256 == _digest(session_id)))


def end_sessions_of(deployment: CoreServices, person: UserIdentity) -> int:
    """Entry point ``ikepki.signed_out: console``: the person signed out at the identity provider,
    so their console sessions from that provider end now (not at the idle timeout)."""
    with deployment.db.write() as conn:
        return int(conn.execute(delete(SESSIONS).where(SESSIONS.c.name == person.principal,
                                                       SESSIONS.c.method == "oidc")).rowcount or 0)


@dataclass(frozen=True)
class PendingLogin:
    """A sign-in at the identity provider under way (RFC 6749 §10.12 ``state``, OpenID Connect
    Core §3.1.2.1 ``nonce``, RFC 7636 §4.1 ``code_verifier``)."""

    provider: str
    state: str
    nonce: str
    code_verifier: str
    next_path: str
    expires_at: datetime


class SqlLoginStore:
    """Pending identity-provider sign-ins, keyed by the SHA-256 of the browser's pre-login cookie:
    any replica can finish a sign-in another started; each is used at most once."""

    def __init__(self, db: Database, ttl: timedelta) -> None:
        self.db, self.ttl = db, ttl

    def begin(self, provider: str, next_path: str, now: datetime) -> tuple[str, PendingLogin]:
        """(pre-login cookie value, the login's fresh state, nonce and verifier)."""
        cookie = secrets.token_urlsafe(32)
        login = PendingLogin(provider, secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                             secrets.token_urlsafe(64), next_path[:300], now + self.ttl)
        with self.db.write() as conn:
            conn.execute(delete(LOGINS).where(LOGINS.c.expires_at < now))
            conn.execute(insert(LOGINS).values(id_sha256=_digest(cookie), provider=provider, state=login.state,
                                               nonce=login.nonce, code_verifier=login.code_verifier,
                                               next_path=login.next_path, created_at=now,
                                               expires_at=login.expires_at))
        return cookie, login

    def take(self, cookie: str | None, now: datetime) -> PendingLogin | None:
        """The login this cookie started, removed (a second callback finds nothing); None when
        unknown or expired."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        key = _digest(cookie)
        with self.db.write() as conn:
            row = conn.execute(select(LOGINS).where(LOGINS.c.id_sha256 == key)).first()
            if row is None or conn.execute(delete(LOGINS).where(LOGINS.c.id_sha256 == key)).rowcount != 1:
                return None
        expires = as_utc(row.expires_at)
        if now >= expires:
            return None
        return PendingLogin(row.provider, row.state, row.nonce, row.code_verifier, row.next_path, expires)
