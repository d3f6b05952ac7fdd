"""The read paths OCSP and CRL publication take on the core's tables, as typed functions over a
:class:`~ca.store.db.Database` (the only place outside :mod:`ca.store.sql` that queries
``certificates`` and ``outbox_events`` for them).

The two hot ones use a raw DB-API cursor: the OCSP status lookup runs for every request, and a
full CRL of 1M entries would cost several times its build in per-row SQLAlchemy objects.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select

from ca.clock import as_utc
from ca.store.db import Database
from ca.store.sql import CERTS, OUTBOX


class StatusRow(NamedTuple):
    serial: str  # hex
    issuer_id: str
    status: str  # valid | revoked | hold
    revoked_at: datetime | None
    revocation_reason: str | None  # RevocationReason name


class StatusReader:
    """Certificate status by serial for the OCSP responder: one raw connection per thread."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._local = threading.local()

    def statuses(self, serials: Sequence[int]) -> dict[int, StatusRow]:
        """The status rows of the known serials among ``serials`` (blocking)."""
        hexes = [format(s, "x") for s in serials]
        if not hexes:
            return {}
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.db.read_engine.raw_connection()
        mark = "?" if self.db.is_sqlite else "%s"
        sql = ("SELECT serial, issuer_id, status, revoked_at, revocation_reason FROM certificates "  # noqa: S608
               f"WHERE serial IN ({', '.join([mark] * len(hexes))})")
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, hexes)
                rows = cursor.fetchall()
            finally:
                cursor.close()
            if not self.db.is_sqlite:
                conn.rollback()  # no transaction left open between requests
        except Exception:
            self._local.conn = None
            with contextlib.suppress(Exception):
                conn.invalidate()
            raise
        out: dict[int, StatusRow] = {}
        for serial, issuer_id, status, revoked_at, reason in rows:
            if revoked_at is not None and not isinstance(revoked_at, datetime):
                revoked_at = datetime.fromisoformat(revoked_at)
            out[int(serial, 16)] = StatusRow(serial, issuer_id, status, as_utc(revoked_at) if revoked_at else None,
                                             reason)
        return out


def revoked_entry_ders(db: Database, issuer_id: str) -> dict[str, bytes]:
    """serial hex -> precomputed CRL entry DER of every revoked/held certificate of ``issuer_id``."""
    mark = "?" if db.is_sqlite else "%s"
    sql = (f"SELECT serial, crl_entry_der FROM certificates WHERE issuer_id = {mark} "  # noqa: S608  (constant)
           "AND status IN ('revoked', 'hold') AND crl_entry_der IS NOT NULL")
    with db.read() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, (issuer_id,))
            out: dict[str, bytes] = {}
            while rows := cursor.fetchmany(50_000):
                out.update((r[0], r[1] if isinstance(r[1], bytes) else bytes(r[1])) for r in rows)
            return out
        finally:
            cursor.close()


class EntryState(NamedTuple):
    status: str  # valid | revoked | hold
    crl_entry_der: bytes | None


def entry_states(db: Database, serials: Iterable[str]) -> dict[str, EntryState]:
    """serial hex -> current status and CRL entry, for the serials that exist (500 per query)."""
    wanted = sorted(set(serials))
    out: dict[str, EntryState] = {}
    with db.read() as conn:
        for i in range(0, len(wanted), 500):
            for row in conn.execute(select(CERTS.c.serial, CERTS.c.status, CERTS.c.crl_entry_der).where(
                    CERTS.c.serial.in_(wanted[i:i + 500]))):
                out[row.serial] = EntryState(row.status, bytes(row.crl_entry_der)
                                             if row.crl_entry_der is not None else None)
    return out


def outbox_position(conn: Any, issuer_id: str | None = None) -> int:
    """The newest outbox event id (of ``issuer_id``'s certificates, if given); 0 if none. ``conn``
    is a read connection of the core database, so callers can take it in their own snapshot."""
    stmt = select(func.coalesce(func.max(OUTBOX.c.id), 0))
    if issuer_id is not None:
        stmt = stmt.where(OUTBOX.c.issuer_id == issuer_id)
    return int(conn.execute(stmt).scalar_one())


def outbox_serials_since(db: Database, since_id: int, issuer_id: str) -> list[str]:
    """Serials (hex) of ``issuer_id`` with an outbox event (revocation or release) after ``since_id``."""
    with db.read() as conn:
        return sorted({s for (s,) in conn.execute(select(OUTBOX.c.serial).where(
            OUTBOX.c.id > since_id, OUTBOX.c.issuer_id == issuer_id))})
