"""SQL implementation of the certificate store (SQLAlchemy Core on SQLModel tables).

Readers (OCSP, CRL, search) get :class:`SqlCertificateReader`; writers (the Authority,
the admin API) get :class:`SqlCertificateStore`. Every write is one transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ca.clock import as_utc
from ca.crl_entry import crl_entry_der
from ca.errors import ErrorKind, PKIError
from ca.model import (
    MAX_QUERY_OFFSET,
    CertificateInfo,
    CertificateQuery,
    CertStatus,
    Requester,
    RevocationReason,
    UserIdentity,
)
from ca.revocation_event import EVENT_REVOKED, EVENT_UNREVOKED, RevocationEvent, now_rfc3339
from ca.store.db import Database
from ca.store.records import (
    AdminTokenRecord,
    AuditEventRecord,
    CertificateRecord,
    CertificateUserRecord,
    DeliveryRecord,
    DeviceRecord,
    GatewayRecord,
    OutboxEventRecord,
    RevocationRecord,
)

CERTS = CertificateRecord.__table__  # type: ignore[attr-defined]
REVOCATIONS = RevocationRecord.__table__  # type: ignore[attr-defined]
AUDIT = AuditEventRecord.__table__  # type: ignore[attr-defined]
OUTBOX = OutboxEventRecord.__table__  # type: ignore[attr-defined]
GATEWAYS = GatewayRecord.__table__  # type: ignore[attr-defined]
DELIVERIES = DeliveryRecord.__table__  # type: ignore[attr-defined]
DEVICES = DeviceRecord.__table__  # type: ignore[attr-defined]
ADMIN_TOKENS = AdminTokenRecord.__table__  # type: ignore[attr-defined]
USERS = CertificateUserRecord.__table__  # type: ignore[attr-defined]
MAX_USER_FIELD = 255
# Statements of every issuance and certificate lookup, built once (building and cache-keying a
# Core statement per call costs more than SQLite running it).
_GET = select(CERTS).where(CERTS.c.serial == bindparam("b_serial"))
_INSERT_CERT = insert(CERTS)
_INSERT_AUDIT = insert(AUDIT)


def _hex(serial: int) -> str:
    return format(serial, "x")


def _info(row: Any) -> CertificateInfo:
    return CertificateInfo(
        serial=int(row.serial, 16), issuer_id=row.issuer_id, subject=row.subject, sans=tuple(json.loads(row.sans)),
        profile=row.profile, not_before=as_utc(row.not_before), not_after=as_utc(row.not_after),
        status=CertStatus(row.status), der=bytes(row.der), requester=row.requester, channel=row.channel,
        revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
        revocation_reason=RevocationReason[row.revocation_reason] if row.revocation_reason else None,
        invalidity_date=as_utc(row.invalidity_date) if row.invalidity_date else None,
        device_id=row.device_id, ek_fingerprint=row.ek_fingerprint,
        crl_entry_der=bytes(row.crl_entry_der) if row.crl_entry_der is not None else None)


def audit_row(at: datetime, actor: str, action: str, channel: str, source: str = "", serial: int | None = None,
              **detail: Any) -> dict[str, Any]:
    return {"at": at, "actor": actor, "action": action, "channel": channel, "source": source,
            "serial": _hex(serial) if serial is not None else None,
            "detail": json.dumps(detail, sort_keys=True, default=str)}


class SqlCertificateReader:
    """Read-only view used by OCSP, CRL and search."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, serial: int) -> CertificateInfo | None:
        with self.db.read() as conn:
            row = conn.execute(_GET, {"b_serial": _hex(serial)}).first()
        return _info(row) if row else None

    def get_many(self, serials: Sequence[int]) -> dict[int, CertificateInfo]:
        """Certificates by serial, 500 per query (a bulk incident names thousands); unknown ones absent."""
        hexes = [_hex(s) for s in dict.fromkeys(serials)]
        out: dict[int, CertificateInfo] = {}
        with self.db.read() as conn:
            for i in range(0, len(hexes), 500):
                for row in conn.execute(select(CERTS).where(CERTS.c.serial.in_(hexes[i:i + 500]))):
                    info = _info(row)
                    out[info.serial] = info
        return out

    @staticmethod
    def _conditions(q: CertificateQuery) -> list[Any]:
        """Substring filters are literal (LIKE wildcards in them are escaped: ``autoescape``); the
        subject filter ignores case on every database (SQLite's LIKE does, PostgreSQL's does not)."""
        conds = []
        if q.serial is not None:
            conds.append(CERTS.c.serial == _hex(q.serial))
        if q.subject_contains:
            conds.append(CERTS.c.subject.icontains(q.subject_contains, autoescape=True))
        if q.san:
            conds.append(CERTS.c.sans.contains(json.dumps(q.san)[1:-1], autoescape=True))
        if q.profile:
            conds.append(CERTS.c.profile == q.profile)
        if q.status:
            conds.append(CERTS.c.status == q.status.value)
        if q.device_id:
            conds.append(CERTS.c.device_id == q.device_id)
        if q.ek_fingerprint:
            conds.append(CERTS.c.ek_fingerprint == q.ek_fingerprint)
        if q.expires_before:
            conds.append(CERTS.c.not_after < q.expires_before)
        if q.expires_after:
            conds.append(CERTS.c.not_after >= q.expires_after)
        if q.user:
            conds.append(CERTS.c.serial.in_(select(USERS.c.serial).where(_user_match(q.user))))
        return conds

    def search(self, q: CertificateQuery) -> list[CertificateInfo]:
        stmt = select(CERTS)
        conds = self._conditions(q)
        if conds:
            stmt = stmt.where(and_(*conds))
        if not 0 <= q.offset <= MAX_QUERY_OFFSET:  # SQLite/PostgreSQL integers are 64-bit: bound before binding
            raise PKIError(ErrorKind.BAD_REQUEST, f"offset must be between 0 and {MAX_QUERY_OFFSET}")
        stmt = stmt.order_by(CERTS.c.created_at.desc()).limit(min(max(q.limit, 1), 100_000)).offset(q.offset)
        with self.db.read() as conn:
            return [_info(r) for r in conn.execute(stmt)]

    def count_matching(self, q: CertificateQuery) -> int:
        """How many certificates the query's filters hit (``limit``/``offset`` ignored)."""
        stmt = select(func.count()).select_from(CERTS)
        conds = self._conditions(q)
        if conds:
            stmt = stmt.where(and_(*conds))
        with self.db.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def users(self, serials: Sequence[int]) -> dict[int, UserIdentity]:
        """The identity-provider user of each certificate that has one."""
        out: dict[int, UserIdentity] = {}
        hexes = [_hex(s) for s in serials]
        with self.db.read() as conn:
            for i in range(0, len(hexes), 500):
                for r in conn.execute(select(USERS).where(USERS.c.serial.in_(hexes[i:i + 500]))):
                    out[int(r.serial, 16)] = UserIdentity(r.issuer, r.subject, r.provider, r.email,
                                                          tuple(json.loads(r.groups)), tuple(json.loads(r.roles)),
                                                          r.device, r.session)
        return out

    def user_session_serials(self, issuer: str, subject: str | None, session: str | None) -> list[int]:
        """Live (valid or held) certificates of a provider user or session (OIDC back-channel logout:
        ``sub``, ``sid`` or both)."""
        conds = [USERS.c.issuer == issuer]
        if subject is not None:
            conds.append(USERS.c.subject == subject)
        if session is not None:
            conds.append(USERS.c.session == session)
        stmt = (select(CERTS.c.serial).join(USERS, USERS.c.serial == CERTS.c.serial)
                .where(and_(*conds), CERTS.c.status != "revoked"))
        with self.db.read() as conn:
            return [int(s, 16) for s in conn.execute(stmt).scalars()]

    def count(self, issuer_id: str | None = None) -> int:
        stmt = select(func.count()).select_from(CERTS)
        if issuer_id:
            stmt = stmt.where(CERTS.c.issuer_id == issuer_id)
        with self.db.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def revoked_entries(self, issuer_id: str, since: datetime | None = None) -> Iterator[tuple[int, bytes]]:
        """(serial, CRL entry DER) of every revoked or held certificate, optionally only those
        revoked at or after ``since`` (for delta CRLs)."""
        stmt = select(CERTS.c.serial, CERTS.c.crl_entry_der).where(
            CERTS.c.issuer_id == issuer_id, CERTS.c.status.in_(("revoked", "hold")))
        if since is not None:
            stmt = stmt.where(CERTS.c.revoked_at >= since)
        with self.db.read() as conn:
            for serial, entry in conn.execute(stmt.execution_options(yield_per=10_000)):
                yield int(serial, 16), bytes(entry)

    def is_device_blocked(self, device_id: str | None, ek_fingerprint: str | None) -> bool:
        conds = []
        if device_id:
            conds.append(DEVICES.c.device_id == device_id)
        if ek_fingerprint:
            conds.append(DEVICES.c.ek_fingerprint == ek_fingerprint)
        if not conds:
            return False
        with self.db.read() as conn:
            return conn.execute(select(DEVICES.c.device_id).where(or_(*conds), DEVICES.c.blocked.is_(True))
                                ).first() is not None

    def verify_admin_token(self, token: str) -> tuple[str, str] | None:
        """(name, role) for a valid admin token; compared by SHA-256 so timing reveals nothing."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self.db.read() as conn:
            row = conn.execute(select(ADMIN_TOKENS.c.name, ADMIN_TOKENS.c.role).where(
                ADMIN_TOKENS.c.token_sha256 == digest, ADMIN_TOKENS.c.disabled.is_(False))).first()
        return (row.name, row.role) if row else None

    def device(self, device_id: str) -> dict[str, Any] | None:
        """The device row (device_id, ek_fingerprint, blocked, blocked_at, block_reason, created_at)."""
        with self.db.read() as conn:
            row = conn.execute(select(DEVICES).where(DEVICES.c.device_id == device_id)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        for key in ("blocked_at", "created_at"):
            if out.get(key) is not None:
                out[key] = as_utc(out[key])
        return out

    def admin_tokens(self) -> list[dict[str, Any]]:
        """Every admin token's name, role, created_at and disabled flag (never its hash)."""
        with self.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(ADMIN_TOKENS.c.name, ADMIN_TOKENS.c.role, ADMIN_TOKENS.c.created_at, ADMIN_TOKENS.c.disabled)
                .order_by(ADMIN_TOKENS.c.id))]
        for row in rows:
            if row["created_at"] is not None:
                row["created_at"] = as_utc(row["created_at"])
        return rows

    def gateways(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(select(GATEWAYS).order_by(GATEWAYS.c.id))]

    def deliveries(self, serials: Sequence[int] | None = None, gateway_id: int | None = None,
                   status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Push delivery rows joined with their event and gateway (newest first), for the admin
        API and the CLI: serial, event_id, kind, gateway, status, attempts, delivered_at, last_error."""
        stmt = (select(DELIVERIES.c.id, DELIVERIES.c.event_id, DELIVERIES.c.status, DELIVERIES.c.attempts,
                       DELIVERIES.c.next_attempt_at, DELIVERIES.c.delivered_at, DELIVERIES.c.last_error,
                       DELIVERIES.c.created_at, OUTBOX.c.serial, OUTBOX.c.issuer_id, OUTBOX.c.kind,
                       GATEWAYS.c.id.label("gateway_id"), GATEWAYS.c.name.label("gateway"),
                       GATEWAYS.c.kind.label("gateway_kind"))
                .join(OUTBOX, OUTBOX.c.event_id == DELIVERIES.c.event_id)
                .join(GATEWAYS, GATEWAYS.c.id == DELIVERIES.c.gateway_id))
        if gateway_id is not None:
            stmt = stmt.where(DELIVERIES.c.gateway_id == gateway_id)
        if status is not None:
            stmt = stmt.where(DELIVERIES.c.status == status)
        stmt = stmt.order_by(DELIVERIES.c.id.desc())
        out: list[dict[str, Any]] = []
        with self.db.read() as conn:
            if serials is None:
                out = [dict(r._mapping) for r in conn.execute(stmt.limit(max(1, min(limit, 100_000))))]
            else:
                hexes = [_hex(s) for s in serials]
                for i in range(0, len(hexes), 500):
                    out += [dict(r._mapping) for r in conn.execute(stmt.where(OUTBOX.c.serial.in_(hexes[i:i + 500])))]
        for row in out:
            for key in ("next_attempt_at", "delivered_at", "created_at"):
                if row[key] is not None:
                    row[key] = as_utc(row[key])
        return out

    def gateway_health(self) -> list[dict[str, Any]]:
        """Every gateway with its pending delivery count and the oldest pending delivery's age."""
        pending = (select(DELIVERIES.c.gateway_id, func.count().label("pending"),
                          func.min(DELIVERIES.c.created_at).label("oldest_pending"))
                   .where(DELIVERIES.c.status == "pending").group_by(DELIVERIES.c.gateway_id).subquery())
        stmt = (select(GATEWAYS, pending.c.pending, pending.c.oldest_pending)
                .outerjoin(pending, pending.c.gateway_id == GATEWAYS.c.id).order_by(GATEWAYS.c.id))
        with self.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            row["pending"] = int(row["pending"] or 0)
            for key in ("oldest_pending", "created_at", "last_success_at"):
                if row[key] is not None:
                    row[key] = as_utc(row[key])
        return rows


    # -- read models for the console's overview and lists (bounded; bucketed by the caller) --------

    def issued_times(self, since: datetime, until: datetime, cap: int = 200_000) -> list[tuple[datetime, str]]:
        """(created_at, channel) of certificates issued in [since, until), at most ``cap``."""
        stmt = (select(CERTS.c.created_at, CERTS.c.channel)
                .where(CERTS.c.created_at >= since, CERTS.c.created_at < until).limit(cap))
        with self.db.read() as conn:
            return [(as_utc(r.created_at), r.channel) for r in conn.execute(stmt)]

    def revoked_times(self, since: datetime, until: datetime, cap: int = 200_000) -> list[tuple[datetime, str]]:
        """(revoked_at, reason) of revocations (holds included) in [since, until), at most ``cap``."""
        stmt = (select(REVOCATIONS.c.revoked_at, REVOCATIONS.c.reason)
                .where(REVOCATIONS.c.revoked_at >= since, REVOCATIONS.c.revoked_at < until).limit(cap))
        with self.db.read() as conn:
            return [(as_utc(r.revoked_at), r.reason) for r in conn.execute(stmt)]

    def expiry_times(self, since: datetime, until: datetime, cap: int = 200_000) -> list[datetime]:
        """not_after of valid certificates expiring in [since, until), at most ``cap``."""
        stmt = (select(CERTS.c.not_after).where(CERTS.c.status == CertStatus.valid.value,
                                                CERTS.c.not_after >= since, CERTS.c.not_after < until).limit(cap))
        with self.db.read() as conn:
            return [as_utc(r.not_after) for r in conn.execute(stmt)]

    def audit_events(self, actor: str | None = None, action: str | None = None, serial: int | None = None,
                     channel: str | None = None, before_id: int | None = None, limit: int = 100
                     ) -> list[dict[str, Any]]:
        """Audit table rows, newest first (id, at, actor, action, channel, source, serial, detail)."""
        stmt = select(AUDIT)
        if actor:
            stmt = stmt.where(AUDIT.c.actor.icontains(actor, autoescape=True))
        if action:
            stmt = stmt.where(AUDIT.c.action == action)
        if serial is not None:
            stmt = stmt.where(AUDIT.c.serial == _hex(serial))
        if channel:
            stmt = stmt.where(AUDIT.c.channel == channel)
        if before_id is not None:
            stmt = stmt.where(AUDIT.c.id < before_id)
        stmt = stmt.order_by(AUDIT.c.id.desc()).limit(max(1, min(limit, 1000)))
        with self.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            row["at"] = as_utc(row["at"])
            try:
                row["detail"] = json.loads(row["detail"] or "{}")
            except ValueError:
                row["detail"] = {"raw": row["detail"]}
        return rows

    def devices(self, contains: str | None = None, blocked: bool | None = None, limit: int = 100,
                offset: int = 0) -> list[dict[str, Any]]:
        """Device rows (newest first) with how many certificates each holds."""
        counts = (select(CERTS.c.device_id, func.count().label("certificates"))
                  .where(CERTS.c.device_id.is_not(None)).group_by(CERTS.c.device_id).subquery())
        stmt = select(DEVICES, counts.c.certificates).outerjoin(counts, counts.c.device_id == DEVICES.c.device_id)
        if contains:
            stmt = stmt.where(or_(DEVICES.c.device_id.icontains(contains, autoescape=True),
                                  DEVICES.c.ek_fingerprint.icontains(contains, autoescape=True)))
        if blocked is not None:
            stmt = stmt.where(DEVICES.c.blocked.is_(blocked))
        stmt = stmt.order_by(DEVICES.c.created_at.desc()).limit(max(1, min(limit, 1000))).offset(max(offset, 0))
        with self.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            row["certificates"] = int(row["certificates"] or 0)
            for key in ("blocked_at", "created_at"):
                if row.get(key) is not None:
                    row[key] = as_utc(row[key])
        return rows
def _user_match(user: str) -> Any:
    """``<iss>#<sub>`` URI, the provider's ``sub`` or the email recorded at issuance (any case)."""
    return or_(USERS.c.uri == user, USERS.c.subject == user, USERS.c.email == user.lower())


def _user_row(serial_hex: str, u: UserIdentity, at: datetime) -> dict[str, Any]:
    for value in (u.issuer, u.subject, u.provider, u.device or "", u.session or ""):
        if len(value) > MAX_USER_FIELD:
            raise PKIError(ErrorKind.BAD_REQUEST, "user identity field longer than 255 characters")
    return {"serial": serial_hex, "issuer": u.issuer, "subject": u.subject, "uri": u.uri[:1024],
            "provider": u.provider, "email": u.email.lower()[:320] if u.email else None,
            "groups": json.dumps(list(u.groups)), "roles": json.dumps(list(u.roles)), "device": u.device,
            "session": u.session, "created_at": at}


class SqlCertificateStore(SqlCertificateReader):
    """Reader plus the writes the Authority and the admin API make."""

    def insert_certificate(self, info: CertificateInfo, created_at: datetime, audit: dict[str, Any],
                           before_commit: Callable[[], None] | None = None, user: UserIdentity | None = None) -> None:
        """Record the certificate, its audit row and its user (if any) in one transaction (before it
        is returned). ``before_commit`` runs inside the transaction (the audit file line): if it
        raises, nothing is committed."""
        row = {"serial": _hex(info.serial), "issuer_id": info.issuer_id, "subject": info.subject,
               "sans": json.dumps(list(info.sans)), "profile": info.profile, "not_before": info.not_before,
               "not_after": info.not_after, "status": info.status.value, "der": info.der,
               "requester": info.requester[:255], "channel": info.channel, "device_id": info.device_id,
               "ek_fingerprint": info.ek_fingerprint, "created_at": created_at}
        try:
            with self.db.write() as conn:
                conn.execute(_INSERT_CERT, row)
                conn.execute(_INSERT_AUDIT, audit)
                if user is not None:
                    conn.execute(insert(USERS), _user_row(_hex(info.serial), user, created_at))
                if info.device_id or info.ek_fingerprint:
                    self._ensure_device(conn, info.device_id or f"ek:{info.ek_fingerprint}", info.ek_fingerprint,
                                        created_at)
                if before_commit is not None:
                    before_commit()
        except IntegrityError:
            raise PKIError(ErrorKind.CONFLICT, "serial collision") from None

    def _ensure_device(self, conn: Connection, device_id: str, ek: str | None, at: datetime) -> None:
        """Insert the device row unless it exists (race-free on SQLite and PostgreSQL)."""
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        conn.execute(dialect_insert(DEVICES).values(device_id=device_id, ek_fingerprint=ek, blocked=False,
                                                    created_at=at).on_conflict_do_nothing())

    def revoke(self, serials: Sequence[int], reason: RevocationReason, at: datetime, actor: str, channel: str,
               source: str, invalidity_date: datetime | None, identity_of: Any,
               before_commit: Callable[[list[CertificateInfo]], None] | None = None) -> list[CertificateInfo]:
        """Revoke (or hold) in one transaction with the revocation rows, the outbox events, one
        delivery row per enabled gateway, and audit rows. Already revoked serials are skipped;
        a held certificate may be revoked for good (RFC 5280 §5.3.1). ``before_commit`` gets the
        changed certificates inside the transaction (audit file lines); if it raises, nothing changes."""
        hold = reason is RevocationReason.certificateHold
        status = "hold" if hold else "revoked"
        done: list[CertificateInfo] = []
        wanted = list(dict.fromkeys(_hex(s) for s in serials))  # batched: a 10k incident is one command
        changes: list[dict[str, Any]] = []
        revocations: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        with self.db.write() as conn:
            gateways = [g.id for g in conn.execute(select(GATEWAYS.c.id).where(GATEWAYS.c.enabled.is_(True)))]
            # FOR UPDATE: replicas revoking the same serial concurrently must not both write events
            rows = {r.serial: r for i in range(0, len(wanted), 500)
                    for r in conn.execute(select(CERTS).where(CERTS.c.serial.in_(wanted[i:i + 500])).with_for_update())}
            for hexed in wanted:
                row = rows.get(hexed)
                if row is None or row.status == "revoked" or (hold and row.status == "hold"):
                    continue
                serial = int(hexed, 16)
                if invalidity_date is not None and invalidity_date < as_utc(row.not_before):
                    raise PKIError(ErrorKind.BAD_REQUEST, f"invalidity date lies before the notBefore of {hexed} "
                                                          "(RFC 5280 §5.3.2)")
                entry = crl_entry_der(serial, at, reason.value, invalidity_date)
                changes.append({"b_serial": hexed, "b_status": status, "b_at": at, "b_reason": reason.name,
                                "b_invalidity": invalidity_date, "b_entry": entry})
                revocations.append({"serial": hexed, "issuer_id": row.issuer_id, "reason": reason.name,
                                    "revoked_at": at, "actor": actor, "channel": channel})
                info = replace(_info(row), status=CertStatus(status), revoked_at=at, revocation_reason=reason,
                               invalidity_date=invalidity_date, crl_entry_der=entry)
                event_row, delivery_rows = self._event_rows(info, EVENT_REVOKED, at, gateways, identity_of)
                outbox.append(event_row)
                deliveries += delivery_rows
                audits.append(audit_row(at, actor, status if hold else "revoke", channel, source, serial,
                                        reason=reason.name))
                done.append(info)
            if changes:
                conn.execute(update(CERTS).where(CERTS.c.serial == bindparam("b_serial")).values(
                    status=bindparam("b_status"), revoked_at=bindparam("b_at"), revocation_reason=bindparam("b_reason"),
                    invalidity_date=bindparam("b_invalidity"), crl_entry_der=bindparam("b_entry")), changes)
                for table, values in ((REVOCATIONS, revocations), (OUTBOX, outbox), (DELIVERIES, deliveries),
                                      (AUDIT, audits)):
                    if values:
                        conn.execute(insert(table), values)
            if done and before_commit is not None:
                before_commit(done)
        return done

    def release_hold(self, serial: int, at: datetime, actor: str, channel: str, source: str,
                     identity_of: Any, before_commit: Callable[[CertificateInfo], None] | None = None
                     ) -> CertificateInfo:
        with self.db.write() as conn:
            row = conn.execute(select(CERTS).where(CERTS.c.serial == _hex(serial)).with_for_update()).first()
            if row is None:
                raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial {_hex(serial)}")
            if row.status != "hold":
                raise PKIError(ErrorKind.CONFLICT, f"certificate {_hex(serial)} is not on hold")
            conn.execute(update(CERTS).where(CERTS.c.serial == row.serial).values(
                status="valid", revoked_at=None, revocation_reason=None, invalidity_date=None, crl_entry_der=None))
            conn.execute(update(REVOCATIONS).where(REVOCATIONS.c.serial == row.serial,
                                                   REVOCATIONS.c.released_at.is_(None)).values(released_at=at))
            info = _info(conn.execute(select(CERTS).where(CERTS.c.serial == row.serial)).one())
            gateways = [g.id for g in conn.execute(select(GATEWAYS.c.id).where(GATEWAYS.c.enabled.is_(True)))]
            self._enqueue(conn, info, EVENT_UNREVOKED, at, gateways, identity_of)
            conn.execute(insert(AUDIT), audit_row(at, actor, "unhold", channel, source, serial))
            if before_commit is not None:
                before_commit(info)
        return info

    def _enqueue(self, conn: Connection, info: CertificateInfo, kind: str, at: datetime, gateways: list[int],
                 identity_of: Any) -> None:
        event_row, delivery_rows = self._event_rows(info, kind, at, gateways, identity_of)
        conn.execute(insert(OUTBOX), event_row)
        if delivery_rows:
            conn.execute(insert(DELIVERIES), delivery_rows)

    @staticmethod
    def _event_rows(info: CertificateInfo, kind: str, at: datetime, gateways: list[int], identity_of: Any
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The outbox row of one revocation event and its delivery row per gateway."""
        issuer, issuer_key_id = identity_of(info.issuer_id)
        event = RevocationEvent(
            event_id=uuid.uuid4().hex, type=kind, issuer=issuer, issuer_key_id=issuer_key_id,
            serial=info.serial_hex, reason=info.revocation_reason.name if info.revocation_reason else None,
            revoked_at=now_rfc3339(info.revoked_at) if info.revoked_at else None, identities=list(info.sans),
            device_id=info.device_id, created_at=now_rfc3339(at))
        event_row = {"event_id": event.event_id, "kind": kind, "issuer_id": info.issuer_id,
                     "serial": info.serial_hex, "payload": event.to_json().decode(), "created_at": at}
        return event_row, [{"event_id": event.event_id, "gateway_id": gw, "status": "pending", "attempts": 0,
                            "next_attempt_at": at, "created_at": at} for gw in gateways]

    def set_device_blocked(self, device_id: str, blocked: bool, at: datetime, actor: str, channel: str,
                           reason: str | None = None, before_commit: Callable[[], None] | None = None) -> None:
        """Block or unblock a device with its audit row; ``before_commit`` runs inside the
        transaction (the audit file line): if it raises, nothing changes."""
        with self.db.write() as conn:
            # "ek:<fingerprint>" names a device by its TPM EK before it has any certificate
            self._ensure_device(conn, device_id, device_id[3:] if device_id.startswith("ek:") else None, at)
            conn.execute(update(DEVICES).where(DEVICES.c.device_id == device_id).values(
                blocked=blocked, blocked_at=at if blocked else None, block_reason=reason if blocked else None))
            # a device known only by EK fingerprint is blocked on every row carrying that fingerprint
            if device_id.startswith("ek:"):
                conn.execute(update(DEVICES).where(DEVICES.c.ek_fingerprint == device_id[3:]).values(
                    blocked=blocked, blocked_at=at if blocked else None))
            conn.execute(insert(AUDIT), audit_row(at, actor, "block-device" if blocked else "unblock-device",
                                                  channel, device=device_id, reason=reason))
            if before_commit is not None:
                before_commit()

    def add_audit(self, at: datetime, actor: str, action: str, channel: str, source: str = "",
                  serial: int | None = None, **detail: Any) -> None:
        """One audit row on its own (calls that change nothing else, e.g. a refused admin call)."""
        with self.db.write() as conn:
            conn.execute(insert(AUDIT), audit_row(at, actor, action, channel, source, serial, **detail))

    @staticmethod
    def _audited(conn: Connection, at: datetime, by: Requester | None, action: str,
                 before_commit: Callable[[], None] | None, **detail: Any) -> None:
        """The audit row of an admin change in its own transaction, then ``before_commit`` (the
        audit file line): if that raises, nothing is committed."""
        if by is not None:
            conn.execute(insert(AUDIT), audit_row(at, by.principal, action, by.channel, by.source, **detail))
        if before_commit is not None:
            before_commit()

    def add_admin_token(self, name: str, role: str, token: str, at: datetime, by: Requester | None = None,
                        before_commit: Callable[[], None] | None = None) -> None:
        if role not in ("viewer", "revoker", "admin"):
            raise PKIError(ErrorKind.BAD_REQUEST, f"unknown role {role!r}")
        try:
            with self.db.write() as conn:
                conn.execute(insert(ADMIN_TOKENS), {"name": name, "role": role, "created_at": at, "disabled": False,
                                                    "token_sha256": hashlib.sha256(token.encode()).hexdigest()})
                self._audited(conn, at, by, "admin-token-create", before_commit, token=name, role=role)
        except IntegrityError:
            raise PKIError(ErrorKind.CONFLICT, f"admin token {name!r} exists") from None

    def disable_admin_token(self, name: str, at: datetime | None = None, by: Requester | None = None,
                            before_commit: Callable[[], None] | None = None) -> None:
        with self.db.write() as conn:
            changed = conn.execute(update(ADMIN_TOKENS).where(ADMIN_TOKENS.c.name == name).values(disabled=True))
            if changed.rowcount != 1:
                raise PKIError(ErrorKind.NOT_FOUND, f"no admin token {name!r}")
            if at is not None:
                self._audited(conn, at, by, "admin-token-disable", before_commit, token=name)

    def set_gateway_enabled(self, name: str, enabled: bool, at: datetime | None = None,
                            by: Requester | None = None, before_commit: Callable[[], None] | None = None) -> None:
        with self.db.write() as conn:
            if conn.execute(update(GATEWAYS).where(GATEWAYS.c.name == name).values(enabled=enabled)).rowcount != 1:
                raise PKIError(ErrorKind.NOT_FOUND, f"no gateway {name!r}")
            if at is not None:
                self._audited(conn, at, by, "gateway-enable" if enabled else "gateway-disable", before_commit,
                              gateway=name, enabled=enabled)

    def add_gateway(self, name: str, kind: str, url: str, at: datetime) -> int:
        if kind not in ("vici", "responder", "webhook"):
            raise PKIError(ErrorKind.BAD_REQUEST, f"unknown gateway kind {kind!r} (vici, responder, webhook)")
        try:
            with self.db.write() as conn:
                result = conn.execute(insert(GATEWAYS), {"name": name, "kind": kind, "url": url, "enabled": True,
                                                         "created_at": at})
                return int(result.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            raise PKIError(ErrorKind.CONFLICT, f"gateway {name!r} exists") from None
