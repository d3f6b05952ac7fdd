"""The push outbox worker (``ikepki serve`` / ``ikepki worker`` run it; entry point
``ikepki.workers: push``).

Loop: every ``poll_interval_ms`` read the due deliveries (one indexed query), claim them per
gateway with a conditional UPDATE + lease, sign each event once with the HSM push key (compact
JWS, ca/revocation_event.py), hand the batch to the gateway's driver in a thread, then mark
rows delivered or reschedule them with exponential backoff. Gateways are served concurrently;
one gateway gets one batch at a time from this process, and claims keep other replicas off the
same rows. Nothing lives only in memory: a restart re-reads the table.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca.errors import ErrorKind, PKIError
from ca.ports import ServiceKeys
from ca.revocation_event import sign_event
from ca.service.liveness import beat
from ca.service.server import BackgroundTask
from ca.store.deliveries import DeliveryQueue, DueDelivery, Gateway
from ocsp.push.crl import CrlSource
from ocsp.push.drivers import DeliveryOutcome, GatewayDriver, SignedEvent, build_drivers
from ocsp.push.settings import PushSettings

log = logging.getLogger("ikepki.push")
SIGNER = "push-signer"
LIVENESS_NAME = "push"
MAX_SILENCE_SECONDS = 120.0  # a round is a stat or one indexed query: this long means a hung database call
JWS_CACHE = 20_000


def push_signer(deployment: ServiceKeys) -> tuple[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
                                                  list[x509.Certificate]]:
    """The HSM push-signer key and its x5c chain (signer certificate, issuing CA)."""
    key = deployment.service_key(SIGNER)
    signing = key.key.key
    if not isinstance(signing, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PKIError(ErrorKind.CONFIG, f"push signer {SIGNER}: an EC or RSA key is required")
    return signing, [key.certificate, deployment.issuers[key.issuer_id].certificate]


def tls_verify(deployment: ServiceKeys, settings: PushSettings) -> Any:
    """What https gateways are verified with: the system roots plus ikepki's root (or nothing
    when ``push.verify_tls`` is off)."""
    if not settings.verify_tls:
        return False
    import ssl

    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=deployment.root.public_bytes(Encoding.PEM).decode())
    return ctx


class PushWorker:
    def __init__(self, deployment: ServiceKeys, settings: PushSettings | None = None,
                 drivers: dict[str, GatewayDriver] | None = None) -> None:
        self.dep = deployment
        self.settings = settings or deployment.settings_for(PushSettings, "push")
        self.queue = DeliveryQueue(deployment.db)
        s = self.settings
        crl = CrlSource(deployment, s.crl, min(2.0, s.timeout_seconds), s.crl_next_update_minutes)
        self.drivers = drivers or build_drivers(s.timeout_seconds, self._verify(), crl.crl_for)
        self._signed: OrderedDict[str, SignedEvent] = OrderedDict()
        self._busy: dict[int, asyncio.Task[None]] = {}

    def _verify(self) -> Any:
        return tls_verify(self.dep, self.settings)

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll cheaply: on SQLite, stat the database and its WAL every ``poll_interval_ms`` (a commit
        by any process changes them) and query only then, or every ``idle_query_ms`` for retries
        that came due. Other databases: query every ``poll_interval_ms`` * 10."""
        s = self.settings
        poll = max(s.poll_interval_ms, 1.0) / 1000
        changes = DbChangeProbe(self.dep.db)
        if not changes.available:
            poll *= 10
        idle_query = max(s.idle_query_ms / 1000, poll)
        last_query = 0.0
        log.info("push worker started (poll %.0f ms, change probe %s)", poll * 1000, changes.available)
        loop = asyncio.get_running_loop()
        while True:
            beat(LIVENESS_NAME)
            started = 0
            if changes.changed() or loop.time() - last_query >= idle_query:
                last_query = loop.time()
                try:
                    started = await self.tick()
                except PKIError as exc:  # database briefly unavailable: keep going
                    log.warning("push worker: %s", exc.detail)
                    await asyncio.sleep(1)
                except Exception:
                    log.exception("push worker round failed")
                    await asyncio.sleep(1)
            if not started:
                await asyncio.sleep(poll)

    async def tick(self) -> int:
        """One round: start a delivery task for each idle gateway with due rows."""
        self._busy = {g: t for g, t in self._busy.items() if not t.done()}
        now = self.dep.clock.now()
        due = await asyncio.to_thread(self.queue.due, now, self.settings.batch * 4, list(self._busy))
        by_gateway: dict[int, list[DueDelivery]] = {}
        for row in due:
            rows = by_gateway.setdefault(row.gateway_id, [])
            if len(rows) < self.settings.batch:
                rows.append(row)
        for gateway_id, rows in by_gateway.items():
            self._busy[gateway_id] = asyncio.create_task(self._deliver(gateway_id, rows), name=f"push-gw-{gateway_id}")
        return len(by_gateway)

    async def drain(self) -> None:
        """Wait for the in-flight gateway batches (tests, shutdown)."""
        await asyncio.gather(*self._busy.values(), return_exceptions=True)

    async def _deliver(self, gateway_id: int, rows: list[DueDelivery]) -> None:
        try:
            await asyncio.to_thread(self.deliver_batch, gateway_id, rows)
        except Exception:
            log.exception("delivery to gateway %s failed", gateway_id)

    # -- one batch (runs in a worker thread) --------------------------------------------------

    def deliver_batch(self, gateway_id: int, rows: Sequence[DueDelivery]) -> None:
        s = self.settings
        mine = self.queue.claim(rows, self.dep.clock.now(), s.lease_seconds)
        if not mine:
            return
        gateway = self.queue.gateway(gateway_id)
        if gateway is None:
            return
        events = self._signed_events([r.event_id for r in mine])
        outcome = self._call_driver(gateway, [events[r.event_id] for r in mine if r.event_id in events])
        delivered = [r for r in mine if r.event_id in events and outcome.errors.get(r.event_id, "lost") is None]
        failed = [(r, outcome.errors.get(r.event_id) or "event missing from outbox")
                  for r in mine if r not in delivered]
        self.queue.finish(gateway_id, delivered, failed, self.dep.clock.now(), s.backoff_base_seconds,
                          s.backoff_max_seconds)
        if delivered:
            log.info("pushed %d event(s) to %s (%s), %d SA(s) terminated", len(delivered), gateway.name,
                     gateway.kind, outcome.terminated)
        for note in outcome.notes:
            log.warning("push to %s: %s", gateway.name, note)
        if failed:
            log.warning("push to %s failed for %d event(s): %s", gateway.name, len(failed), failed[0][1])

    def _call_driver(self, gateway: Gateway, events: list[SignedEvent]) -> DeliveryOutcome:
        driver = self.drivers.get(gateway.kind)
        if driver is None:
            return DeliveryOutcome({e.event.event_id: f"no driver for kind {gateway.kind!r}" for e in events})
        if not events:
            return DeliveryOutcome({})
        try:
            return driver.deliver(gateway, events)
        except Exception as exc:  # a driver bug must not kill the worker; retry later
            log.exception("driver %s crashed", gateway.kind)
            return DeliveryOutcome({e.event.event_id: f"driver error: {type(exc).__name__}: {exc}"[:300]
                                    for e in events})

    def _signed_events(self, event_ids: list[str]) -> dict[str, SignedEvent]:
        """Each event is signed once (HSM push key) and cached by event id."""
        missing = [e for e in dict.fromkeys(event_ids) if e not in self._signed]
        if missing:
            key, chain = push_signer(self.dep)
            for event_id, item in self.queue.events(missing).items():
                info = self.dep.store.get(item.event.serial_int)
                jws = sign_event(item.event, key, chain)
                self._signed[event_id] = SignedEvent(item.event, jws, item.issuer_id, info.subject if info else "")
            while len(self._signed) > JWS_CACHE:
                self._signed.popitem(last=False)
        return {e: self._signed[e] for e in event_ids if e in self._signed}


class DbChangeProbe:
    """Did anyone commit since the last look? For SQLite in WAL mode, every commit writes the
    ``-wal`` file (and a checkpoint the main file): compare their stat signatures."""

    def __init__(self, db: Any) -> None:
        self.paths: list[Path] = []
        url = str(db.url)
        if url.startswith("sqlite:///") and ":memory:" not in url:
            main = Path(url[len("sqlite:///"):])
            self.paths = [main, main.with_name(main.name + "-wal")]
        self._last: tuple[tuple[int, int, int], ...] | None = None

    @property
    def available(self) -> bool:
        return bool(self.paths)

    def changed(self) -> bool:
        if not self.paths:
            return True
        sig = []
        for p in self.paths:
            try:
                st = os.stat(p)
                sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                sig.append((0, 0, 0))
        now = tuple(sig)
        if now == self._last:
            return False
        self._last = now
        return True


def background_tasks(deployment: ServiceKeys) -> list[BackgroundTask]:
    settings = deployment.settings_for(PushSettings, "push")
    if not settings.enabled:
        return []
    worker = PushWorker(deployment, settings)
    return [BackgroundTask(LIVENESS_NAME, worker.run, max_silence=MAX_SILENCE_SECONDS)]
