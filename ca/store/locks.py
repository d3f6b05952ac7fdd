"""Deployment-wide exclusive locks for one-time work that several processes may start at once: the
key ceremony (``ikepki init``, e.g. the chart's init-ca container in every api replica) and schema
migrations (``ikepki db upgrade``, the migrate container).

On PostgreSQL a session-level advisory lock (``pg_advisory_lock``, PostgreSQL manual §13.3.5) held
on a connection of its own: every replica sees the same lock whatever node or volume it runs on,
and it is released when the holder's session ends, also when the process dies. On SQLite the
database is a file in the deployment directory, so an exclusive ``flock`` on a lock file beside it
serves the same purpose (also released by the kernel when the holder dies)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from ca.errors import ErrorKind, PKIError

DEFAULT_WAIT_SECONDS = 1800  # a ceremony on a slow HSM (RSA key generation) may take minutes


def lock_key(name: str) -> int:
    """The advisory lock key of ``name``: a signed 64-bit integer, stable across releases."""
    return int.from_bytes(hashlib.sha256(f"ikepki:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def exclusive(database_url: str, lock_file: Path, name: str,
              wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Iterator[None]:
    """Hold the deployment-wide lock ``name`` for the block: the PostgreSQL advisory lock when
    ``database_url`` is PostgreSQL, else an exclusive ``flock`` on ``lock_file``. PostgreSQL waits at
    most ``wait_seconds`` (``lock_timeout``), then ``PKIError(UNAVAILABLE)``; the flock waits as long
    as its holder lives."""
    if database_url.startswith("postgresql"):
        with _advisory(database_url, name, wait_seconds):
            yield
    else:
        with _flock(lock_file):
            yield


@contextlib.contextmanager
def _advisory(url: str, name: str, wait_seconds: float) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT set_config('lock_timeout', :ms, false)"), {"ms": f"{int(wait_seconds * 1000)}"})
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(name)})
            except OperationalError:
                raise PKIError(ErrorKind.UNAVAILABLE, f"another process has held the {name} lock for over "
                                                      f"{wait_seconds:.0f} s; try again later") from None
            conn.commit()  # the lock is the session's, not the transaction's
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dropped session has released it already
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(name)})
                    conn.commit()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock
