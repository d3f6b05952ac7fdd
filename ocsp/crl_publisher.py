"""The CRL publisher: full and delta CRLs per issuing CA plus the root CA's CRL (RFC 5280 §5),
stored in ``ocsp_crl_publications`` so every replica serves the same bytes.

One publisher at a time: callers hold the ``crl-publisher`` lease (:mod:`ocsp.lease`). CRL
numbers come from the table (max + 1 per issuer, shared by full and delta CRLs, §5.2.3) and a
unique constraint on (issuer, number) makes a racing second publisher fail rather than reuse a
number, so numbers strictly increase across replicas.

Policy (``crl:`` settings):
- A scheduled full CRL every ``full_interval_hours`` (nextUpdate ``full_validity_hours``) is a
  *base*: delta CRLs name the newest base in deltaCRLIndicator and list every certificate whose
  status changed since the base (the core's outbox events after the base's feed position, minus a
  margin): revoked or held ones with their entry, released holds as removeFromCRL (§5.2.4,
  §5.3.1). A client keeping any full CRL numbered >= that base can apply the delta.
- On revocation (seen in the core's outbox), a new delta and — unless ``full_on_revocation`` is
  off — a new full CRL (not a base) are published; the caller debounces.
- A delta is also re-issued every ``delta_interval_minutes`` (before its nextUpdate).
- The root CA's CRL (no revoked CAs in the store: an empty list with number, AKI, nextUpdate
  ``root_validity_days``) is re-issued at half its validity.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from ca.clock import as_utc
from ca.errors import PKIError
from ca.ports import ServiceKeys
from ca.store.outbox_feed import OutboxFeed
from ca.store.status import entry_states, outbox_position, outbox_serials_since, revoked_entry_ders
from ocsp.crl import CrlIssuer, build_crl, remove_from_crl_entries
from ocsp.crl_lint import lint_crl_entry
from ocsp.records import CrlPublicationRecord
from ocsp.settings import CrlSettings

CRLS = CrlPublicationRecord.__table__  # type: ignore[attr-defined]
ROOT = "root"
RETRIES = 8
DELTA_ID_MARGIN = 1000  # outbox ids below a base's feed position that may have committed after it
FEED_BATCH = 5000
log = logging.getLogger("ikepki.crl")


@dataclass(frozen=True)
class Published:
    """A row of ``ocsp_crl_publications`` without the DER."""

    id: int
    issuer_id: str
    kind: str
    crl_number: int
    base_number: int | None
    is_base: bool
    cut_at: datetime
    feed_cursor: int
    this_update: datetime
    next_update: datetime
    entries: int


_COLUMNS = [CRLS.c.id, CRLS.c.issuer_id, CRLS.c.kind, CRLS.c.crl_number, CRLS.c.base_number, CRLS.c.is_base,
            CRLS.c.cut_at, CRLS.c.feed_cursor, CRLS.c.this_update, CRLS.c.next_update, CRLS.c.entries]


def _published(row: Any) -> Published:
    return Published(row.id, row.issuer_id, row.kind, int(row.crl_number), row.base_number, bool(row.is_base),
                     as_utc(row.cut_at), int(row.feed_cursor), as_utc(row.this_update), as_utc(row.next_update),
                     int(row.entries))


def latest(conn: Any, issuer_id: str, kind: str, base_only: bool = False) -> Published | None:
    stmt = select(*_COLUMNS).where(CRLS.c.issuer_id == issuer_id, CRLS.c.kind == kind)
    if base_only:
        stmt = stmt.where(CRLS.c.is_base.is_(True))
    row = conn.execute(stmt.order_by(CRLS.c.crl_number.desc()).limit(1)).first()
    return _published(row) if row else None


class EntryCache:
    """The revoked entries of one issuer, each linted once (:func:`ocsp.crl_lint.lint_crl_entry`), kept
    in memory and brought up to date from the core's
    outbox (every revocation and release writes one event, read through :class:`OutboxFeed`, which
    also catches ids committed out of order), so a rebuild after a revocation reads a handful of
    rows instead of all of them. Reloaded completely every ``reload_after`` seconds."""

    def __init__(self, db: Any, issuer_id: str, reload_after: float) -> None:
        self.db, self.issuer_id, self.reload_after = db, issuer_id, reload_after
        self.entries: dict[str, bytes] | None = None
        self.feed = OutboxFeed(batch=FEED_BATCH)
        self.loaded_at = 0.0

    def current(self) -> list[bytes]:
        reload = self.entries is None or time.monotonic() - self.loaded_at > self.reload_after
        with self.db.read() as conn:
            if reload:
                self.feed = OutboxFeed(batch=FEED_BATCH)
                self.feed.read(conn)  # take the position before loading: later events are replayed
            else:
                serials: set[str] = set()
                while True:
                    rows = self.feed.read(conn)
                    serials |= {r.serial for r in rows if r.issuer_id == self.issuer_id}
                    if len(rows) < FEED_BATCH:
                        break
                assert self.entries is not None
                states = entry_states(self.db, serials)
                for serial in serials:
                    state = states.get(serial)
                    if state is not None and state.status in ("revoked", "hold") and state.crl_entry_der is not None:
                        lint_crl_entry(state.crl_entry_der, delta=False)
                        self.entries[serial] = state.crl_entry_der
                    else:
                        self.entries.pop(serial, None)
        if reload:
            entries = revoked_entry_ders(self.db, self.issuer_id)
            for entry in entries.values():  # once per entry: build_crl then lints only the envelope
                lint_crl_entry(entry, delta=False)
            self.entries = entries
            self.loaded_at = time.monotonic()
        assert self.entries is not None
        return list(self.entries.values())


def crl_issuers(dep: ServiceKeys) -> dict[str, CrlIssuer]:
    """Every issuing CA (with its delta URL for FreshestCRL) and the root CA."""
    out = {i: CrlIssuer(i, iss.certificate, iss.key, iss.urls.delta_crl) for i, iss in dep.issuers.items()}
    try:
        out[ROOT] = CrlIssuer(ROOT, dep.root, dep.signing_key(dep.manifest["root"]["key"]), None)
    except (PKIError, KeyError, OSError) as exc:  # an offline root: publish its CRL at the ceremony instead
        log.warning("root CA key not available here (%s): no root CRL from this publisher", exc)
    return out


class CrlPublisher:
    """Builds, signs and records CRLs (blocking: call from a thread)."""

    def __init__(self, dep: ServiceKeys, settings: CrlSettings | None = None) -> None:
        self.dep = dep
        self.settings = settings or dep.settings_for(CrlSettings, "crl")
        self._issuers: dict[str, CrlIssuer] | None = None
        self._caches: dict[str, EntryCache] = {}

    def _entry_cache(self, issuer_id: str) -> EntryCache:
        if issuer_id not in self._caches:
            self._caches[issuer_id] = EntryCache(self.dep.db, issuer_id, self.settings.full_interval_hours * 3600)
        return self._caches[issuer_id]

    @property
    def issuers(self) -> dict[str, CrlIssuer]:
        if self._issuers is None:
            self._issuers = crl_issuers(self.dep)
        return self._issuers

    # -- decisions ----------------------------------------------------------------------------

    def run_once(self, force: bool = False, revoked: frozenset[str] = frozenset()) -> list[str]:
        """Publish whatever is due now; returns descriptions of what was published. ``revoked``:
        issuers with outbox rows not yet covered, even if below the newest id (committed late)."""
        done: list[str] = []
        failed: list[str] = []
        for issuer_id in self.issuers:
            try:
                done.extend(self._run_issuer(issuer_id, force, revoked))
            except Exception as exc:  # one failing CA (HSM, offline key) must not hold back the others
                log.warning("CRL publication for %s failed: %s", issuer_id, exc)
                failed.append(issuer_id)
        if failed and len(failed) == len(self.issuers):
            raise RuntimeError(f"no CRL could be published ({', '.join(failed)})")
        return done

    def _run_issuer(self, issuer_id: str, force: bool, revoked: frozenset[str]) -> list[str]:
        s = self.settings
        out: list[str] = []
        now = self.dep.clock.now()
        with self.dep.db.read() as conn:
            full = latest(conn, issuer_id, "full")
            base = latest(conn, issuer_id, "full", base_only=True)
            delta = latest(conn, issuer_id, "delta")
            feed = self.feed_position(conn, issuer_id)
        if issuer_id == ROOT:
            if force or full is None or now - full.this_update >= timedelta(days=s.root_validity_days) / 2:
                out.append(self.publish_full(issuer_id, is_base=True))
            return out
        new_base = force or base is None or now - base.this_update >= timedelta(hours=s.full_interval_hours)
        if new_base:
            out.append(self.publish_full(issuer_id, is_base=True))
        elif full is not None and (feed > full.feed_cursor or issuer_id in revoked) and s.full_on_revocation:
            out.append(self.publish_full(issuer_id, is_base=False))
        stale = delta is None or now - delta.this_update >= timedelta(minutes=s.delta_interval_minutes)
        if new_base or stale or issuer_id in revoked or feed > delta.feed_cursor:  # type: ignore[union-attr]
            out.append(self.publish_delta(issuer_id))
        return out

    def feed_position(self, conn: Any, issuer_id: str) -> int:
        """The newest outbox event (revocation or release) for this issuer."""
        return outbox_position(conn, issuer_id)

    def feed_max(self) -> int:
        with self.dep.db.read() as conn:
            return outbox_position(conn)

    # -- publishing ---------------------------------------------------------------------------

    def publish_full(self, issuer_id: str, is_base: bool) -> str:
        issuer = self.issuers[issuer_id]
        validity = (timedelta(days=self.settings.root_validity_days) if issuer_id == ROOT
                    else timedelta(hours=self.settings.full_validity_hours))
        for attempt in range(RETRIES):
            now = self.dep.clock.now().replace(microsecond=0)
            with self.dep.db.read() as conn:
                feed = self.feed_position(conn, issuer_id)
                number = self._next_number(conn, issuer_id)
            entries = [] if issuer_id == ROOT else self._entry_cache(issuer_id).current()
            der, count = build_crl(issuer, entries, number, now, now + validity, entries_linted=True)
            if self._record(issuer_id, "full", number, None, is_base, now, feed, now, now + validity, count, der):
                return f"{issuer_id} full #{number} ({count} entries{', base' if is_base else ''})"
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise RuntimeError(f"could not publish a full CRL for {issuer_id}: CRL numbers kept colliding")

    def publish_delta(self, issuer_id: str) -> str:
        issuer = self.issuers[issuer_id]
        validity = timedelta(hours=self.settings.delta_validity_hours)
        for attempt in range(RETRIES):
            now = self.dep.clock.now().replace(microsecond=0)
            with self.dep.db.read() as conn:
                base = latest(conn, issuer_id, "full", base_only=True)
                feed = self.feed_position(conn, issuer_id)
                number = self._next_number(conn, issuer_id)
            if base is None:
                self.publish_full(issuer_id, is_base=True)
                continue
            der, count = build_crl(issuer, self._delta_entries(issuer_id, base, now), number, now, now + validity,
                                   delta_base=base.crl_number)
            if self._record(issuer_id, "delta", number, base.crl_number, False, now, feed, now, now + validity,
                            count, der):
                return f"{issuer_id} delta #{number} (base #{base.crl_number}, {count} entries)"
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise RuntimeError(f"could not publish a delta CRL for {issuer_id}")

    def _delta_entries(self, issuer_id: str, base: Published, now: datetime) -> list[bytes]:
        """Entries changed since the base (RFC 5280 §5.2.4): the serials of the outbox events after the
        base's feed position (minus a margin for ids committed late), each with its current state —
        revoked or held: its entry; released from hold: removeFromCRL. An indexed range read, not a
        scan of every certificate."""
        since_id = max(0, base.feed_cursor - DELTA_ID_MARGIN)
        entries: list[bytes] = []
        released: list[int] = []
        serials = outbox_serials_since(self.dep.db, since_id, issuer_id)
        for serial, state in sorted(entry_states(self.dep.db, serials).items()):
            if state.status in ("revoked", "hold") and state.crl_entry_der is not None:
                entries.append(state.crl_entry_der)
            elif state.status == "valid":
                released.append(int(serial, 16))
        return entries + remove_from_crl_entries(released, now, skip=set())

    def _next_number(self, conn: Any, issuer_id: str) -> int:
        current = conn.execute(select(func.max(CRLS.c.crl_number)).where(CRLS.c.issuer_id == issuer_id)).scalar()
        return int(current or 0) + 1

    def _record(self, issuer_id: str, kind: str, number: int, base_number: int | None, is_base: bool,
                cut_at: datetime, feed: int, this_update: datetime, next_update: datetime, entries: int,
                der: bytes) -> bool:
        try:
            with self.dep.db.write() as conn:
                conn.execute(insert(CRLS), {
                    "issuer_id": issuer_id, "kind": kind, "crl_number": number, "base_number": base_number,
                    "is_base": is_base, "cut_at": cut_at, "feed_cursor": feed, "this_update": this_update,
                    "next_update": next_update, "entries": entries, "sha256": hashlib.sha256(der).hexdigest(),
                    "der": der, "created_at": self.dep.clock.now()})
                self._prune(conn, issuer_id, kind)
        except IntegrityError:
            log.warning("CRL number %d for %s already taken (another publisher?); retrying", number, issuer_id)
            return False
        log.info("published %s %s CRL #%d (%d entries)", issuer_id, kind, number, entries)
        return True

    def _prune(self, conn: Any, issuer_id: str, kind: str) -> None:
        """Keep the newest ``keep_history`` CRLs of this kind, and always the newest base."""
        keep = conn.execute(select(CRLS.c.crl_number).where(CRLS.c.issuer_id == issuer_id, CRLS.c.kind == kind)
                            .order_by(CRLS.c.crl_number.desc()).limit(1).offset(self.settings.keep_history - 1)
                            ).scalar()
        if keep is None:
            return
        newest_base = conn.execute(select(func.max(CRLS.c.crl_number)).where(
            CRLS.c.issuer_id == issuer_id, CRLS.c.is_base.is_(True))).scalar()
        conn.execute(delete(CRLS).where(and_(CRLS.c.issuer_id == issuer_id, CRLS.c.kind == kind,
                                             CRLS.c.crl_number < keep, CRLS.c.crl_number != (newest_base or -1))))
