"""The OCSP responder's maintenance loop: keeps the pre-signed responses true and fresh.

Every ``poll_seconds`` it reads the core's revocation feed (:meth:`StatusSource.changes`): the
responses cached for a revoked or released serial are dropped and re-signed at once together with
the SHA-1 form of its CertID (what most clients send), so the new status is served within about a
second without waiting for a request (RFC 5019 §2.2.2 allows pre-produced responses only while
they are true). About every twentieth of the validity (at least 5 s) it refreshes: entries past
half their validity are re-signed if they were asked for within one validity period, dropped
otherwise; shared responses older than their validity are deleted.

One loop per responder, started by the first request in whatever event loop serves it (or by the
``ocsp-presign`` background task); it never stops on an error (the next round retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor

from ca.der import der_integer, der_octets, der_seq
from ca.errors import PKIError
from ocsp.presigned_cache import PresignedCache
from ocsp.presigner import Presigner
from ocsp.shared_presigned import SharedPresigned
from ocsp.status_source import StatusSource

log = logging.getLogger("ikepki.ocsp")
SHA1_CERTID_ALG = bytes.fromhex("300906052b0e03021a0500")  # AlgorithmIdentifier { id-sha1, NULL }


def cert_id_der(hash_alg_der: bytes, name_hash: bytes, key_hash: bytes, serial: int) -> bytes:
    """A CertID (RFC 6960 §4.1.1) as clients encode it."""
    return der_seq(hash_alg_der, der_octets(name_hash), der_octets(key_hash), der_integer(serial))


class Maintenance:
    """Feed poll + refresh for one responder's cache. ``sha1_ids``: issuer -> (issuerNameHash,
    issuerKeyHash) with SHA-1, to re-sign that CertID form after a revocation."""

    def __init__(self, status: StatusSource, presigner: Presigner, cache: PresignedCache, shared: SharedPresigned,
                 sha1_ids: dict[str, tuple[bytes, bytes]], validity_seconds: int, poll_seconds: float,
                 read_pool: Executor) -> None:
        self.status = status
        self.presigner = presigner
        self.cache = cache
        self.shared = shared
        self.sha1_ids = sha1_ids
        self.validity = validity_seconds
        self.poll_seconds = poll_seconds
        self.read_pool = read_pool
        self.task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        """Start the loop once, in whatever event loop is running (no-op outside one)."""
        if self.task is None or self.task.done():
            try:
                self.task = asyncio.get_running_loop().create_task(self._run(), name="ocsp-maintain")
            except RuntimeError:
                return

    async def stop(self) -> None:
        """Cancel the loop and wait for it (from the loop it runs in)."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cancel(self) -> None:
        """Cancel the loop without waiting (from anywhere)."""
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        last_refresh = 0.0
        while True:
            try:
                await self.poll_feed()
                if time.monotonic() - last_refresh > max(self.validity / 20, 5):
                    last_refresh = time.monotonic()
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving; the next round retries
                log.warning("OCSP maintenance: %s", exc)
            await asyncio.sleep(self.poll_seconds)

    async def poll_feed(self) -> int:
        """Apply revocations/releases recorded since the last poll; returns how many."""
        changes = await asyncio.get_running_loop().run_in_executor(self.read_pool, self.status.changes)
        if not changes:
            return 0
        resign: list[tuple[str, int, bytes]] = []
        for issuer_id, serial in dict.fromkeys(changes):
            resign += [(issuer_id, serial, key) for key in self.presigner.invalidate(issuer_id, serial)]
            if issuer_id in self.sha1_ids:
                nh, kh = self.sha1_ids[issuer_id]
                resign.append((issuer_id, serial, cert_id_der(SHA1_CERTID_ALG, nh, kh, serial)))
        seen: set[bytes] = set()
        for issuer_id, serial, key in resign:
            if key in seen:
                continue
            seen.add(key)
            try:
                await self.presigner.presign(issuer_id, key, serial)
            except PKIError as exc:
                log.warning("re-signing after revocation failed: %s", exc)
        return len(changes)

    async def refresh(self) -> int:
        """Re-sign cached entries past half their validity; drop those not asked for since (and
        shared responses older than their validity). Returns how many were due."""
        if self.shared.dir is not None:
            await asyncio.get_running_loop().run_in_executor(self.read_pool, self.shared.expire, self.validity + 60)
        now = time.time()
        idle_limit = time.monotonic() - self.validity
        due = []
        for key, entry in self.cache.items():
            if now < entry.this_update + (entry.next_update - entry.this_update) / 2:
                continue
            if entry.last_hit < idle_limit:
                self.cache.drop(key)
            else:
                due.append((key, entry))
        for key, entry in due:
            try:
                await self.presigner.presign(entry.issuer_id, key, entry.serial)
            except PKIError as exc:
                log.warning("pre-sign refresh failed: %s", exc)
                break
        return len(due)
