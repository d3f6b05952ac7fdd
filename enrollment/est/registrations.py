"""MDM device registrations (one-time enrollment secrets) and enrollments pending approval.

Consumption ordering (the one-time secret vs. issuance)
------------------------------------------------------
Issuance is the Authority's own transaction, so "consume" and "issue" cannot share one. We:

1. validate everything that does not need the secret consumed (authentication, CSR, SANs ⊆
   registration, profile) — a client error here leaves the secret untouched;
2. **claim** the registration with one conditional UPDATE (``… WHERE used = false``, rowcount
   must be 1): of two concurrent requests exactly one wins, the other gets 403;
3. issue; on a PKIError from issuance (client error, HSM/database unavailable) the claim is
   **released** (``… WHERE claim_id = ours AND serial IS NULL``) so the secret stays usable;
4. on success record the serial on the registration (finalize).

A process crash between 2 and 4 leaves a claim without a serial; such a claim can be taken
again after ``claim_timeout_seconds`` (the registration then says who/when claimed it).
Secrets are 192-bit random values, so they are stored as SHA-256 (no slow KDF needed) and
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from sqlalchemy import and_, bindparam, delete, insert, or_, select, update

from ca.clock import as_utc
from ca.errors import ErrorKind, PKIError
from ca.profiles import san_text
from ca.store.db import Database
from enrollment.est.records import EstPendingRecord, EstRegistrationRecord

REGS = EstRegistrationRecord.__table__  # type: ignore[attr-defined]
PENDING = EstPendingRecord.__table__  # type: ignore[attr-defined]

# Hot-path statements built once (building Core statements per call cost more than SQLite itself).
_GET = select(REGS).where(REGS.c.device_id == bindparam("b_device_id"))
_CLAIM_WHERE = [REGS.c.device_id == bindparam("b_device_id"), REGS.c.expires_at > bindparam("b_now"),
                or_(REGS.c.used.is_(False), and_(REGS.c.serial.is_(None), REGS.c.used_at < bindparam("b_stale")))]
_CLAIM = update(REGS).where(*_CLAIM_WHERE).values(
    used=True, claim_id=bindparam("b_claim_id"), used_at=bindparam("b_now"), used_by=bindparam("b_principal"))
_CLAIM_WITH_SECRET = update(REGS).where(*_CLAIM_WHERE, REGS.c.secret_sha256 == bindparam("b_secret")).values(
    used=True, claim_id=bindparam("b_claim_id"), used_at=bindparam("b_now"), used_by=bindparam("b_principal"))
_FINALIZE = update(REGS).where(REGS.c.device_id == bindparam("b_device_id"),
                               REGS.c.claim_id == bindparam("b_claim_id")).values(serial=bindparam("b_serial"))

MAX_BULK = 10_000
MAX_DEVICE_ID = 255
MAX_SANS_PER_DEVICE = 32


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_san_text(text: str) -> x509.GeneralName:
    """``DNS:h1.example``, ``IP:192.0.2.1``, ``email:a@example`` (a bare name means DNS)."""
    kind, sep, value = text.strip().partition(":")
    if not sep:
        kind, value = "DNS", text.strip()
    kind = kind.lower()
    try:
        if kind == "dns" and value:
            return x509.DNSName(value.lower())
        if kind == "ip":
            return x509.IPAddress(ipaddress.ip_address(value))
        if kind in ("email", "rfc822") and value:
            return x509.RFC822Name(value)
    except ValueError:
        pass
    raise PKIError(ErrorKind.BAD_REQUEST, f"unsupported SAN {text!r} (DNS:name, IP:address, email:address)")


def check_device_id(device_id: str) -> str:
    if not device_id or len(device_id) > MAX_DEVICE_ID or ":" in device_id or not device_id.isprintable():
        raise PKIError(ErrorKind.BAD_REQUEST, "device id must be 1-255 printable characters without ':'")
    return device_id


@dataclass(frozen=True)
class DeviceRegistration:
    """What an MDM pre-authorises for one device (input of :meth:`RegistrationStore.register`)."""

    device_id: str
    profile: str
    sans: tuple[str, ...]
    ek_fingerprint: str | None = None
    expires_hours: float | None = None


@dataclass(frozen=True)
class IssuedSecret:
    device_id: str
    secret: str
    expires_at: datetime


@dataclass(frozen=True)
class Registration:
    device_id: str
    profile: str
    sans: tuple[str, ...]
    ek_fingerprint: str | None
    expires_at: datetime
    used: bool
    used_at: datetime | None
    used_by: str | None
    serial: int | None
    secret_sha256: str

    def general_names(self) -> list[x509.GeneralName]:
        return [parse_san_text(s) for s in self.sans]


@dataclass(frozen=True)
class Pending:
    id: str
    label: str
    principal: str
    device_id: str | None
    subject: str
    sans: tuple[str, ...]
    csr_der: bytes
    status: str
    serial: int | None
    created_at: datetime


def _registration(row: object) -> Registration:
    r = row
    return Registration(r.device_id, r.profile, tuple(json.loads(r.sans)), r.ek_fingerprint,  # type: ignore[attr-defined]
                        as_utc(r.expires_at), bool(r.used), as_utc(r.used_at) if r.used_at else None,  # type: ignore[attr-defined]
                        r.used_by, int(r.serial, 16) if r.serial else None, r.secret_sha256)  # type: ignore[attr-defined]


def _pending(row: object) -> Pending:
    r = row
    return Pending(r.id, r.label, r.principal, r.device_id, r.subject, tuple(json.loads(r.sans)),  # type: ignore[attr-defined]
                   bytes(r.csr_der), r.status, int(r.serial, 16) if r.serial else None,  # type: ignore[attr-defined]
                   as_utc(r.created_at))  # type: ignore[attr-defined]


class RegistrationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- registrations ------------------------------------------------------------------------

    def register(self, devices: Sequence[DeviceRegistration], now: datetime, actor: str,
                 default_hours: float, before_commit: Callable[[], None] | None = None) -> list[IssuedSecret]:
        """Create (or replace) registrations in one transaction; the secrets are returned once.
        ``before_commit`` runs inside the transaction (the audit line): if it raises, nothing changes."""
        if not devices:
            raise PKIError(ErrorKind.BAD_REQUEST, "no devices to register")
        if len(devices) > MAX_BULK:
            raise PKIError(ErrorKind.BAD_REQUEST, f"at most {MAX_BULK} devices per call")
        ids = [check_device_id(d.device_id) for d in devices]
        if len(set(ids)) != len(ids):
            raise PKIError(ErrorKind.BAD_REQUEST, "duplicate device id in the request")
        rows, out = [], []
        for d in devices:
            if not d.sans or len(d.sans) > MAX_SANS_PER_DEVICE:
                raise PKIError(ErrorKind.BAD_REQUEST, f"device {d.device_id}: 1-{MAX_SANS_PER_DEVICE} SANs required")
            sans = sorted({san_text(parse_san_text(s)) for s in d.sans})
            hours = d.expires_hours if d.expires_hours is not None else default_hours
            if not 0 < hours <= 24 * 365:
                raise PKIError(ErrorKind.BAD_REQUEST, f"device {d.device_id}: expiry must be 0-8760 hours")
            if d.ek_fingerprint is not None and (not d.ek_fingerprint or len(d.ek_fingerprint) > 128):
                raise PKIError(ErrorKind.BAD_REQUEST, f"device {d.device_id}: invalid EK fingerprint")
            secret = secrets.token_urlsafe(24)
            expires = now + timedelta(hours=hours)
            rows.append({"device_id": d.device_id, "profile": d.profile, "sans": json.dumps(sans),
                         "ek_fingerprint": d.ek_fingerprint, "secret_sha256": hash_secret(secret),
                         "expires_at": expires, "used": False, "claim_id": None, "used_at": None, "used_by": None,
                         "serial": None, "created_at": now, "created_by": actor[:255]})
            out.append(IssuedSecret(d.device_id, secret, expires))
        with self.db.write() as conn:
            for chunk in range(0, len(ids), 500):
                conn.execute(delete(REGS).where(REGS.c.device_id.in_(ids[chunk:chunk + 500])))
            conn.execute(insert(REGS), rows)
            if before_commit is not None:
                before_commit()
        return out

    def get(self, device_id: str) -> Registration | None:
        with self.db.read() as conn:
            row = conn.execute(_GET, {"b_device_id": device_id}).first()
        return _registration(row) if row else None

    def all(self, limit: int = 1000) -> list[Registration]:
        with self.db.read() as conn:
            rows = conn.execute(select(REGS).order_by(REGS.c.created_at.desc()).limit(limit)).all()
        return [_registration(r) for r in rows]

    def claim(self, device_id: str, secret_sha256: str | None, now: datetime, principal: str,
              claim_timeout: timedelta) -> str | None:
        """Atomically take a usable registration; returns the claim id, or None if someone else has it."""
        claim_id = uuid.uuid4().hex
        params = {"b_device_id": device_id, "b_now": now, "b_stale": now - claim_timeout, "b_claim_id": claim_id,
                  "b_principal": principal[:255], "b_secret": secret_sha256}
        with self.db.write() as conn:
            result = conn.execute(_CLAIM if secret_sha256 is None else _CLAIM_WITH_SECRET, params)
            return claim_id if result.rowcount == 1 else None

    def release(self, device_id: str, claim_id: str) -> None:
        """Undo our claim (issuance failed, no certificate exists): the secret is usable again."""
        with self.db.write() as conn:
            conn.execute(update(REGS).where(REGS.c.device_id == device_id, REGS.c.claim_id == claim_id,
                                            REGS.c.serial.is_(None)).values(
                used=False, claim_id=None, used_at=None, used_by=None))

    def finalize(self, device_id: str, claim_id: str, serial: int) -> None:
        with self.db.write() as conn:
            conn.execute(_FINALIZE, {"b_device_id": device_id, "b_claim_id": claim_id, "b_serial": format(serial, "x")})

    # -- manual approval ----------------------------------------------------------------------

    def pending_for(self, request_key: str) -> Pending | None:
        with self.db.read() as conn:
            row = conn.execute(select(PENDING).where(PENDING.c.request_key == request_key)).first()
        return _pending(row) if row else None

    def add_pending(self, request_key: str, label: str, principal: str, device_id: str | None, subject: str,
                    sans: Sequence[str], csr_der: bytes, now: datetime) -> Pending:
        """Record a held enrollment; a concurrent duplicate of the same request returns the existing one."""
        from sqlalchemy.exc import IntegrityError

        pid = secrets.token_hex(8)
        try:
            with self.db.write() as conn:
                conn.execute(insert(PENDING), {"id": pid, "request_key": request_key, "label": label[:64],
                                               "principal": principal[:255], "device_id": device_id,
                                               "subject": subject[:1024], "sans": json.dumps(list(sans)),
                                               "csr_der": csr_der, "status": "pending", "serial": None,
                                               "created_at": now})
        except IntegrityError:
            pass
        found = self.pending_for(request_key)
        assert found is not None
        return found

    def list_pending(self, status: str | None = "pending", limit: int = 1000) -> list[Pending]:
        stmt = select(PENDING).order_by(PENDING.c.created_at).limit(limit)
        if status:
            stmt = stmt.where(PENDING.c.status == status)
        with self.db.read() as conn:
            return [_pending(r) for r in conn.execute(stmt)]

    def decide(self, pending_id: str, approve: bool, now: datetime, actor: str,
               before_commit: Callable[[], None] | None = None) -> Pending:
        """pending -> approved / rejected; ``before_commit`` (the audit line) runs inside the
        transaction once the decision is certain: if it raises, the enrollment stays pending."""
        with self.db.write() as conn:
            result = conn.execute(update(PENDING).where(PENDING.c.id == pending_id, PENDING.c.status == "pending")
                                  .values(status="approved" if approve else "rejected", decided_at=now,
                                          decided_by=actor[:255]))
            row = conn.execute(select(PENDING).where(PENDING.c.id == pending_id)).first()
            if row is not None and result.rowcount == 1 and before_commit is not None:
                before_commit()
        if row is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no pending EST enrollment {pending_id!r}")
        if result.rowcount != 1:
            raise PKIError(ErrorKind.CONFLICT, f"enrollment {pending_id} is already {row.status}")
        return _pending(row)

    def take_approved(self, pending_id: str) -> bool:
        """approved -> issuing, atomically (two polls of one approved request issue once)."""
        with self.db.write() as conn:
            return conn.execute(update(PENDING).where(PENDING.c.id == pending_id, PENDING.c.status == "approved")
                                .values(status="issuing")).rowcount == 1

    def finish_pending(self, pending_id: str, serial: int | None) -> None:
        """issuing -> issued (with the serial), or back to approved when issuance failed."""
        values = {"status": "issued", "serial": format(serial, "x")} if serial is not None else {"status": "approved"}
        with self.db.write() as conn:
            conn.execute(update(PENDING).where(PENDING.c.id == pending_id, PENDING.c.status == "issuing")
                         .values(**values))


_NO_SECRET = "0" * 64


def secret_matches(registration: Registration | None, secret: str) -> bool:
    stored = registration.secret_sha256 if registration is not None else _NO_SECRET
    return hmac.compare_digest(stored, hash_secret(secret)) and registration is not None
