"""The delivery queue on the core's ``outbox_events`` / ``deliveries`` / ``gateways`` tables.

At-least-once delivery with leases: a worker *claims* a due row with a conditional UPDATE
(``… WHERE id = ? AND status = 'pending' AND attempts = <seen>``, rowcount 1 = ours), which also
moves ``next_attempt_at`` a lease into the future. If the worker dies, the row becomes due
again when the lease runs out, so several replicas (or a restarted server) never lose an
event and never deliver one concurrently.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update

from ca.clock import as_utc
from ca.revocation_event import RevocationEvent
from ca.store.db import Database
from ca.store.sql import DELIVERIES, GATEWAYS, OUTBOX

MAX_ERROR = 1000


@dataclass(frozen=True)
class DueDelivery:
    id: int
    event_id: str
    gateway_id: int
    attempts: int  # attempts made before this claim


@dataclass(frozen=True)
class Gateway:
    id: int
    name: str
    kind: str
    url: str
    enabled: bool


@dataclass(frozen=True)
class OutboxEvent:
    event: RevocationEvent
    issuer_id: str


def backoff(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with +-20 % jitter: base * 2^(attempts-1), capped."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.8, 1.2)


class DeliveryQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def due(self, now: datetime, limit: int, skip_gateways: Iterable[int] = ()) -> list[DueDelivery]:
        """Pending deliveries whose time has come, to enabled gateways not in ``skip_gateways``."""
        skip = list(skip_gateways)
        cond = [DELIVERIES.c.status == "pending", DELIVERIES.c.next_attempt_at <= now, GATEWAYS.c.enabled.is_(True)]
        if skip:
            cond.append(DELIVERIES.c.gateway_id.not_in(skip))
        stmt = (select(DELIVERIES.c.id, DELIVERIES.c.event_id, DELIVERIES.c.gateway_id, DELIVERIES.c.attempts)
                .join(GATEWAYS, GATEWAYS.c.id == DELIVERIES.c.gateway_id)
                .where(and_(*cond)).order_by(DELIVERIES.c.id).limit(limit))
        with self.db.read() as conn:
            return [DueDelivery(r.id, r.event_id, r.gateway_id, r.attempts) for r in conn.execute(stmt)]

    def claim(self, rows: Sequence[DueDelivery], now: datetime, lease: float) -> list[DueDelivery]:
        """Take the rows no one else took since we read them (one transaction)."""
        until = now + timedelta(seconds=lease)
        mine: list[DueDelivery] = []
        with self.db.write() as conn:
            for row in rows:
                result = conn.execute(update(DELIVERIES).where(
                    DELIVERIES.c.id == row.id, DELIVERIES.c.status == "pending",
                    DELIVERIES.c.attempts == row.attempts).values(attempts=row.attempts + 1, next_attempt_at=until))
                if result.rowcount == 1:
                    mine.append(row)
        return mine

    def events(self, event_ids: Sequence[str]) -> dict[str, OutboxEvent]:
        out: dict[str, OutboxEvent] = {}
        with self.db.read() as conn:
            for i in range(0, len(event_ids), 500):
                for r in conn.execute(select(OUTBOX.c.event_id, OUTBOX.c.payload, OUTBOX.c.issuer_id).where(
                        OUTBOX.c.event_id.in_(event_ids[i:i + 500]))):
                    out[r.event_id] = OutboxEvent(RevocationEvent.from_json(r.payload.encode()), r.issuer_id)
        return out

    def gateway(self, gateway_id: int) -> Gateway | None:
        with self.db.read() as conn:
            r = conn.execute(select(GATEWAYS).where(GATEWAYS.c.id == gateway_id)).first()
        return Gateway(r.id, r.name, r.kind, r.url, bool(r.enabled)) if r else None

    def finish(self, gateway_id: int, delivered: Sequence[DueDelivery], failed: Sequence[tuple[DueDelivery, str]],
               now: datetime, base: float, cap: float) -> None:
        """Record one round's outcome: delivered rows, rescheduled rows, and the gateway's health."""
        with self.db.write() as conn:
            for row in delivered:
                conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == row.id, DELIVERIES.c.status == "pending")
                             .values(status="delivered", delivered_at=now, last_error=None))
            for row, error in failed:
                retry_at = now + timedelta(seconds=backoff(row.attempts + 1, base, cap))
                conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == row.id, DELIVERIES.c.status == "pending")
                             .values(next_attempt_at=retry_at, last_error=error[:MAX_ERROR]))
            values: dict[str, Any] = {}
            if delivered:
                values["last_success_at"] = now
            if failed:
                values["last_error"] = f"{now.isoformat()} {failed[0][1]}"[:MAX_ERROR]
            elif delivered:
                values["last_error"] = None
            if values:
                conn.execute(update(GATEWAYS).where(GATEWAYS.c.id == gateway_id).values(**values))

    def pending_count(self) -> int:
        from sqlalchemy import func

        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(DELIVERIES)
                                    .where(DELIVERIES.c.status == "pending")).scalar_one())


def as_aware(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None
