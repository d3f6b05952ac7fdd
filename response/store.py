"""SQL access to the response tables (SQLAlchemy Core on the deployment's database)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ca.clock import as_utc
from ca.store.db import Database
from response.records import GuardLockRecord, IncidentRecord, MessageIdRecord

INCIDENTS = IncidentRecord.__table__  # type: ignore[attr-defined]
MESSAGE_IDS = MessageIdRecord.__table__  # type: ignore[attr-defined]
GUARD_LOCK = GuardLockRecord.__table__  # type: ignore[attr-defined]
COUNTED = ("executing", "executed", "approved", "released")  # statuses whose changes count against limits
OPEN = ("executing", "executed", "approved", "pending")


@dataclass(frozen=True)
class Incident:
    id: int
    created_at: datetime
    updated_at: datetime
    source: str
    format: str
    fingerprint: str
    rule: str
    action: str
    reason: str | None
    block_device: bool
    release_on_resolve: bool
    target_kind: str
    target_value: str
    status: str
    serials: tuple[str, ...]
    devices: tuple[str, ...]
    changed: tuple[str, ...]
    cert_count: int
    device_count: int
    guard: str | None
    alert: dict[str, str]
    decided_by: str | None
    decided_at: datetime | None
    note: str | None
    resolved_at: datetime | None
    error: str | None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else \
                list(value) if isinstance(value, tuple) else value
        return out


def _incident(row: Any) -> Incident:
    def ts(v: Any) -> datetime | None:
        return as_utc(v) if v is not None else None

    return Incident(row.id, as_utc(row.created_at), as_utc(row.updated_at), row.source, row.format, row.fingerprint,
                    row.rule, row.action, row.reason, bool(row.block_device), bool(row.release_on_resolve),
                    row.target_kind, row.target_value, row.status, tuple(json.loads(row.serials)),
                    tuple(json.loads(row.devices)), tuple(json.loads(row.changed)), row.cert_count, row.device_count,
                    row.guard, json.loads(row.alert), row.decided_by, ts(row.decided_at), row.note,
                    ts(row.resolved_at), row.error)


@dataclass(frozen=True)
class Budget:
    """A limit checked against what was already changed in its window."""

    scope: str  # "global" or "rule <name>"
    max_certificates: int
    max_devices: int
    window: timedelta
    rule: str | None = None


class ResponseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- replay protection ----------------------------------------------------------------------

    def remember_message(self, source: str, msg_id: str, now: datetime, keep: timedelta) -> bool:
        """Record a message id; False if it was seen before (a replay). This source's ids older
        than ``keep`` (more than the timestamp tolerance) are pruned: their timestamps are refused
        anyway. Pruning is per source: each format keeps its ids for its own period."""
        try:
            with self.db.write() as conn:
                conn.execute(delete(MESSAGE_IDS).where(MESSAGE_IDS.c.source == source,
                                                       MESSAGE_IDS.c.seen_at < now - keep))
                conn.execute(insert(MESSAGE_IDS), {"source": source, "msg_id": msg_id, "seen_at": now})
            return True
        except IntegrityError:
            return False

    def forget_message(self, source: str, msg_id: str) -> None:
        """Undo :meth:`remember_message` when the message could not be handled (the sender retries)."""
        with self.db.write() as conn:
            conn.execute(delete(MESSAGE_IDS).where(MESSAGE_IDS.c.source == source, MESSAGE_IDS.c.msg_id == msg_id))

    # -- incidents ------------------------------------------------------------------------------

    def open_incident(self, source: str, fingerprint: str, rule: str) -> Incident | None:
        """The unresolved incident this rule already made of this alert (Alertmanager repeats)."""
        with self.db.read() as conn:
            row = conn.execute(select(INCIDENTS).where(
                INCIDENTS.c.source == source, INCIDENTS.c.fingerprint == fingerprint, INCIDENTS.c.rule == rule,
                INCIDENTS.c.status.in_(OPEN), INCIDENTS.c.resolved_at.is_(None)).order_by(INCIDENTS.c.id.desc())
            ).first()
        return _incident(row) if row else None

    def record(self, now: datetime, values: dict[str, Any]) -> Incident:
        """An incident that changes nothing (dry run, no targets, duplicate)."""
        with self.db.write() as conn:
            new_id = conn.execute(insert(INCIDENTS), self._row(now, values)).inserted_primary_key[0]  # type: ignore[index]
            return _incident(conn.execute(select(INCIDENTS).where(INCIDENTS.c.id == new_id)).one())

    def reserve(self, now: datetime, values: dict[str, Any], budgets: Sequence[Budget]) -> Incident:
        """Count what the budgets' windows already changed and insert the incident as
        ``executing`` (its counts reserved) or, beyond any budget, ``pending`` — one transaction,
        serialised across replicas by the guard lock row."""
        with self.db.write() as conn:
            conn.execute(select(GUARD_LOCK).where(GUARD_LOCK.c.name == "global").with_for_update()).first()
            over = None
            for b in budgets:
                stmt = select(func.coalesce(func.sum(INCIDENTS.c.cert_count), 0),
                              func.coalesce(func.sum(INCIDENTS.c.device_count), 0)).where(
                    INCIDENTS.c.status.in_(COUNTED), INCIDENTS.c.counted_at >= now - b.window)
                if b.rule is not None:
                    stmt = stmt.where(INCIDENTS.c.rule == b.rule)
                certs, devices = conn.execute(stmt).one()
                if certs + values["cert_count"] > b.max_certificates or \
                        devices + values["device_count"] > b.max_devices:
                    over = (f"{b.scope}: {certs}+{values['cert_count']} certificates / {devices}+"
                            f"{values['device_count']} devices in {int(b.window.total_seconds())} s exceeds "
                            f"{b.max_certificates} / {b.max_devices}")
                    break
            row = self._row(now, {**values, "status": "pending" if over else "executing", "guard": over,
                                  "counted_at": None if over else now})
            new_id = conn.execute(insert(INCIDENTS), row).inserted_primary_key[0]  # type: ignore[index]
            return _incident(conn.execute(select(INCIDENTS).where(INCIDENTS.c.id == new_id)).one())

    def claim_decision(self, incident_id: int, decision: str, actor: str, now: datetime, note: str | None) -> bool:
        """pending -> approved (then executed by the caller) or rejected; False if not pending or
        its alert already resolved."""
        status = "executing" if decision == "approve" else "rejected"
        with self.db.write() as conn:
            done = conn.execute(update(INCIDENTS).where(INCIDENTS.c.id == incident_id,
                                                        INCIDENTS.c.status == "pending",
                                                        INCIDENTS.c.resolved_at.is_(None)).values(
                status=status, decided_by=actor[:255], decided_at=now, note=(note or None) and note[:1024],
                updated_at=now, counted_at=now if decision == "approve" else None)).rowcount
        return done == 1

    def finish(self, incident_id: int, now: datetime, status: str, changed: Sequence[str],
               cert_count: int | None = None, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "changed": json.dumps(list(changed)), "updated_at": now,
                                  "error": error and error[:1024]}
        if cert_count is not None:
            values["cert_count"] = cert_count
        with self.db.write() as conn:
            conn.execute(update(INCIDENTS).where(INCIDENTS.c.id == incident_id).values(**values))

    def resolved(self, source: str, fingerprint: str, now: datetime) -> list[Incident]:
        """Mark this alert's open incidents resolved; returns them (before the mark). A pending one
        becomes ``resolved``: nothing is left to approve once the alert is gone."""
        with self.db.write() as conn:
            rows = [_incident(r) for r in conn.execute(select(INCIDENTS).where(
                INCIDENTS.c.source == source, INCIDENTS.c.fingerprint == fingerprint,
                INCIDENTS.c.resolved_at.is_(None), INCIDENTS.c.status.in_(OPEN)).with_for_update())]
            if rows:
                conn.execute(update(INCIDENTS).where(INCIDENTS.c.id.in_([r.id for r in rows])).values(
                    resolved_at=now, updated_at=now))
                conn.execute(update(INCIDENTS).where(INCIDENTS.c.id.in_([r.id for r in rows]),
                                                     INCIDENTS.c.status == "pending").values(status="resolved"))
        return rows

    def get(self, incident_id: int) -> Incident | None:
        with self.db.read() as conn:
            row = conn.execute(select(INCIDENTS).where(INCIDENTS.c.id == incident_id)).first()
        return _incident(row) if row else None

    def list(self, status: str | None = None, limit: int = 100, source: str | None = None) -> list[Incident]:
        stmt = select(INCIDENTS).order_by(INCIDENTS.c.id.desc()).limit(max(1, min(limit, 10_000)))
        if status:
            stmt = stmt.where(INCIDENTS.c.status == status)
        if source:
            stmt = stmt.where(INCIDENTS.c.source == source)
        with self.db.read() as conn:
            return [_incident(r) for r in conn.execute(stmt)]

    @staticmethod
    def _row(now: datetime, values: dict[str, Any]) -> dict[str, Any]:
        row = {"created_at": now, "updated_at": now, "reason": None, "block_device": False,
               "release_on_resolve": False, "serials": [], "devices": [], "changed": [], "cert_count": 0,
               "device_count": 0, "counted_at": None, "guard": None, "alert": {}, **values}
        for key in ("serials", "devices", "changed", "alert"):
            if not isinstance(row[key], str):
                row[key] = json.dumps(row[key] if not isinstance(row[key], tuple) else list(row[key]))
        row["target_value"] = str(row["target_value"])[:255]
        return row
