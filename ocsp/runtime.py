"""One OCSP/CRL runtime per deployment and process, shared by the HTTP mounts and the background
tasks (the pre-signed cache the HTTP edge serves is the one the refresher keeps fresh)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from ca.ports import ServiceKeys
from ca.service.liveness import beat
from ca.store.outbox_feed import OutboxFeed
from ocsp import lease
from ocsp.crl_publisher import CrlPublisher
from ocsp.crl_serve import CrlCache
from ocsp.responder import Responder
from ocsp.settings import CrlSettings, OcspSettings
from ocsp.signers import delegated_cert, needs_rotation, rotate

log = logging.getLogger("ikepki.ocsp")
CRL_LEASE, ROTATION_LEASE = "crl-publisher", "ocsp-signer-rotation"
SCHEDULE_SECONDS = 30.0  # re-check CRL schedules at least this often
CRL_LOOP = "crl-publisher"
CRL_MAX_SILENCE_SECONDS = 300.0  # a round reads the outbox and maybe publishes (1M entries: < 1 s)
MIN_SIGNER_AGE = timedelta(seconds=10)


@dataclass
class OcspRuntime:
    dep: ServiceKeys
    ocsp_settings: OcspSettings
    crl_settings: CrlSettings
    holder: str = field(default_factory=lease.holder_id)
    _publish_lock: threading.Lock = field(default_factory=threading.Lock)
    _lease_until: float = 0.0

    @cached_property
    def responder(self) -> Responder:
        return Responder(self.dep, self.ocsp_settings)

    @cached_property
    def crls(self) -> CrlCache:
        return CrlCache(self.dep, self.crl_settings.poll_seconds)

    @cached_property
    def publisher(self) -> CrlPublisher:
        return CrlPublisher(self.dep, self.crl_settings)

    @cached_property
    def crl_issuer_ids(self) -> frozenset[str]:
        return frozenset([*self.dep.issuers, "root"])

    # -- CRL publishing -----------------------------------------------------------------------

    def _hold_lease(self, name: str = CRL_LEASE) -> bool:
        ttl = self.crl_settings.lease_seconds
        if name == CRL_LEASE and time.monotonic() < self._lease_until - ttl / 2:
            return True
        if lease.acquire(self.dep.db, name, self.holder, self.dep.clock.now(), timedelta(seconds=ttl)):
            if name == CRL_LEASE:
                self._lease_until = time.monotonic() + ttl
            return True
        if name == CRL_LEASE:
            self._lease_until = 0.0
        return False

    def publish(self, force: bool = False, revoked: frozenset[str] = frozenset()) -> list[str] | None:
        """Publish what is due if this process holds the publisher lease (blocking); None if not.
        ``revoked``: issuers with revocations/releases seen in the outbox since the last publication."""
        with self._publish_lock:
            if not self._hold_lease():
                return None
            return self.publisher.run_once(force, revoked)

    def _read_outbox(self, feed: OutboxFeed) -> list[Any]:
        with self.dep.db.read() as conn:
            return feed.read(conn)

    async def crl_loop(self) -> None:
        """Background task: publish on schedule and, debounced, after revocations (read from the
        outbox feed, which also sees a revocation committed after a later one: ca/store/outbox_feed.py)."""
        feed = OutboxFeed()
        pending: set[str] = set()
        led = False  # until this process has published once, try every round (take over an expired lease)
        last = 0.0
        while True:
            beat(CRL_LOOP)
            try:
                rows = await asyncio.to_thread(self._read_outbox, feed)
                if rows and led:
                    await asyncio.sleep(self.crl_settings.debounce_seconds)
                    rows += await asyncio.to_thread(self._read_outbox, feed)
                pending |= {r.issuer_id for r in rows}
                if rows or not led or time.monotonic() - last > SCHEDULE_SECONDS:
                    done = await asyncio.to_thread(self.publish, False, frozenset(pending))
                    if done is not None:  # not the leader: keep polling, take over when the lease expires
                        led, last = True, time.monotonic()
                        pending.clear()
                        for line in done:
                            log.info("CRL published: %s", line)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("CRL publisher: %s", exc)
            await asyncio.sleep(self.crl_settings.poll_seconds)

    # -- OCSP ---------------------------------------------------------------------------------

    async def presign_loop(self) -> None:
        """Background task: the responder's feed poll + refresh (also started by the first request)."""
        self.responder.maintenance.ensure_started()
        while True:
            await asyncio.sleep(3600)

    def rotate_due(self) -> list[str]:
        """Re-issue delegated signer certificates close to expiry (under the rotation lease)."""
        now = self.dep.clock.now()
        before = timedelta(hours=self.ocsp_settings.signer_rotate_before_hours)
        due = []
        for issuer_id in self.dep.issuers:
            cert = delegated_cert(self.dep, issuer_id)
            if (cert is not None and needs_rotation(cert, now, before)
                    and now - cert.not_valid_before_utc >= MIN_SIGNER_AGE):
                due.append(issuer_id)
        if not due or not self._hold_lease(ROTATION_LEASE):
            return []
        rotated = []
        for issuer_id in due:
            cert = rotate(self.dep, issuer_id)
            rotated.append(f"{issuer_id}: {cert.serial_number:x}")
        self.responder.reload_signers()
        return rotated

    async def rotation_loop(self) -> None:
        while True:
            try:
                rotated = await asyncio.to_thread(self.rotate_due)
                for line in rotated:
                    log.info("OCSP signer rotated: %s", line)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("OCSP signer rotation: %s", exc)
            await asyncio.sleep(self.ocsp_settings.signer_check_seconds)


_RUNTIMES: dict[int, tuple[ServiceKeys, OcspRuntime]] = {}


def runtime_for(dep: ServiceKeys) -> OcspRuntime:
    entry = _RUNTIMES.get(id(dep))
    if entry is None or entry[0] is not dep:
        rt = OcspRuntime(dep, dep.settings_for(OcspSettings, "ocsp"), dep.settings_for(CrlSettings, "crl"))
        _RUNTIMES[id(dep)] = (dep, rt)
        return rt
    return entry[1]

