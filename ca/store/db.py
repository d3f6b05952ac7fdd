"""Engines: SQLite (WAL, embedded default) or PostgreSQL, with write transactions that
take the lock up front so concurrent writers queue instead of failing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from ca.errors import ErrorKind, PKIError


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, poolclass=NullPool
                           if ":memory:" in url else None)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's default is broken)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # straight to the DB-API connection: SQLAlchemy's statement path (events, result set-up)
        # cost more than SQLite's BEGIN itself, once per transaction
        conn.connection.dbapi_connection.execute(begin)  # type: ignore[union-attr]

    return engine


class Database:
    """A read engine and a write engine on one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:
            self.read_engine = self.write_engine = create_engine(url, pool_size=10, max_overflow=20,
                                                                 pool_pre_ping=True)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction that commits on success and rolls back on any error."""
        try:
            with self.write_engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"database unavailable: {exc.orig}") from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.read_engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"database unavailable: {exc.orig}") from None

    def ping(self) -> bool:
        try:
            with self.read_engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except OperationalError:
            return False

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()
