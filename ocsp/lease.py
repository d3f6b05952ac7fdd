"""Leases in ``ocsp_leases``: one replica at a time publishes CRLs (so CRL numbers strictly
increase) and rotates OCSP signer certificates. Taking or renewing is one conditional UPDATE
(or INSERT for a new name) whose row count says who won; works on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, or_, update
from sqlalchemy.exc import IntegrityError

from ca.service.supervisor import service_pid
from ca.store.db import Database
from ocsp.records import LeaseRecord

LEASES = LeaseRecord.__table__  # type: ignore[attr-defined]


def holder_id() -> str:
    """This process: host, the service's pid (``ikepki serve``'s, also in its worker processes) and
    a random suffix (each process, and a restarted one, is a new holder)."""
    return f"{socket.gethostname()[:64]}:{service_pid()}:{uuid.uuid4().hex[:8]}"


def acquire(db: Database, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the lease ``name`` until ``now + ttl``; False if another holder has it."""
    with db.write() as conn:
        result = conn.execute(update(LEASES).where(LEASES.c.name == name, or_(
            LEASES.c.holder == holder, LEASES.c.expires_at < now)).values(holder=holder, expires_at=now + ttl))
        if result.rowcount == 1:
            return True
    try:
        with db.write() as conn:
            conn.execute(insert(LEASES), {"name": name, "holder": holder, "expires_at": now + ttl})
        return True
    except IntegrityError:
        return False


def release(db: Database, name: str, holder: str) -> None:
    with db.write() as conn:
        conn.execute(update(LEASES).where(LEASES.c.name == name, LEASES.c.holder == holder).values(
            expires_at=datetime(1970, 1, 1, tzinfo=UTC)))

