"""Serving published CRLs: the newest row per (issuer, kind) from ``ocsp_crl_publications``,
cached in memory and re-checked at most every ``poll_seconds`` (one indexed query), so every
replica serves the same bytes shortly after the publisher records them."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from email.utils import formatdate

from sqlalchemy import select

from ca.ports import ServiceKeys
from ocsp.crl import to_pem
from ocsp.crl_publisher import CRLS, latest


@dataclass
class ServedCrl:
    id: int
    number: int
    der: bytes
    etag: bytes
    last_modified: bytes
    expires: bytes
    next_update: float
    _pem: bytes | None = field(default=None, repr=False)

    @property
    def pem(self) -> bytes:
        if self._pem is None:
            self._pem = to_pem(self.der)
        return self._pem


class CrlCache:
    """Newest CRL per (issuer, kind) for the HTTP edge and ``ikepki crl publish``."""

    def __init__(self, dep: ServiceKeys, poll_seconds: float) -> None:
        self.dep = dep
        self.poll = poll_seconds
        self.crls: dict[tuple[str, str], ServedCrl] = {}
        self.checked: dict[tuple[str, str], float] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, issuer_id: str, kind: str) -> ServedCrl | None:
        key = (issuer_id, kind)
        if time.monotonic() - self.checked.get(key, 0.0) > self.poll:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                if time.monotonic() - self.checked.get(key, 0.0) > self.poll:
                    await asyncio.to_thread(self.refresh, issuer_id, kind)
        return self.crls.get(key)

    def refresh(self, issuer_id: str, kind: str) -> ServedCrl | None:
        """Load the newest CRL if it changed (blocking)."""
        key = (issuer_id, kind)
        with self.dep.db.read() as conn:
            newest = latest(conn, issuer_id, kind)
            current = self.crls.get(key)
            if newest is not None and (current is None or current.id != newest.id):
                der = bytes(conn.execute(select(CRLS.c.der).where(CRLS.c.id == newest.id)).scalar_one())
                self.crls[key] = ServedCrl(
                    newest.id, newest.crl_number, der, b'"' + hashlib.sha256(der).hexdigest()[:32].encode() + b'"',
                    formatdate(newest.this_update.timestamp(), usegmt=True).encode(),
                    formatdate(newest.next_update.timestamp(), usegmt=True).encode(), newest.next_update.timestamp())
        self.checked[key] = time.monotonic()
        return self.crls.get(key)
