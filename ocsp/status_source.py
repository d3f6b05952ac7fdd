"""How the OCSP responder finds a serial's status (RFC 6960 §2.2) and learns that it changed.

Everything comes through the core's store interfaces, never its tables:
:class:`ca.store.status.StatusReader` for the status of a batch of serials (a raw DB-API
connection per thread: this runs for every nonce request, and a pooled SQLAlchemy round trip
costs several times the query itself) and :class:`ca.store.outbox_feed.OutboxFeed` for the
revocations and releases recorded since the last look (it also sees a revocation committed after
a later one).

Status mapping (RFC 6960 §2.2, §4.4.8):
- a serial the store knows under that issuer: ``good`` (valid) or ``revoked`` with its time and
  reason (a hold is ``certificateHold``);
- a serial it does not know, or knows under another issuer: ``unknown``, or with
  ``ocsp.non_issued: revoked`` revoked + certificateHold at the epoch (the response then carries
  the extended-revoke extension), or with ``ocsp.non_issued: unauthorized`` no signed answer
  (:class:`NotAuthoritative`: the caller answers the unsigned ``unauthorized`` status, so a flood
  of made-up serials costs no HSM signature and evicts nothing from the pre-signed cache);
- under the root CA (``root``): the issuing CA certificates are ``good`` (CA revocation is not
  recorded in the store), anything else as not issued.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Literal

from ca.model import RevocationReason
from ca.store.db import Database
from ca.store.outbox_feed import OutboxFeed
from ca.store.status import StatusReader, StatusRow
from ocsp.responder_der import GOOD, NOT_ISSUED, UNKNOWN, CertState
from ocsp.signers import ROOT

FEED_BATCH = 5000  # outbox events read per feed poll
# ``ocsp.non_issued: unauthorized``: a serial we never issued gets no signed answer at all
NOT_OURS = CertState("unauthorized")


class NotAuthoritative(Exception):
    """A requested serial was never issued here and ``ocsp.non_issued`` is ``unauthorized``: the
    answer is the unsigned ``unauthorized`` OCSPResponse (RFC 6960 §2.3, RFC 5019 §2.2.3)."""


class StatusSource:
    """Certificate status by (issuer, serial) and the feed of status changes, both blocking: call
    them off the event loop."""

    def __init__(self, db: Database, ca_serials: Iterable[int],
                 non_issued: Literal["unknown", "revoked", "unauthorized"] = "unknown") -> None:
        self.db = db
        self.ca_serials = frozenset(ca_serials)
        self.not_issued = {"revoked": NOT_ISSUED, "unauthorized": NOT_OURS}.get(non_issued, UNKNOWN)
        self._reader = StatusReader(db)
        self._feed = OutboxFeed(FEED_BATCH)  # revocations committed out of id order too (ca/store/outbox_feed.py)
        self._feed_lock = threading.Lock()  # read from the maintenance loop and by the first pre-sign

    def lookup(self, issuer_id: str, serials: list[int]) -> list[CertState]:
        """The status of each serial under ``issuer_id``, in order (blocking: one store query)."""
        if issuer_id == ROOT:
            return [GOOD if s in self.ca_serials else self.not_issued for s in serials]
        rows = self._reader.statuses(serials)
        return [self._state(rows.get(s), issuer_id) for s in serials]

    def _state(self, row: StatusRow | None, issuer_id: str) -> CertState:
        if row is None or row.issuer_id != issuer_id:
            return self.not_issued
        if row.status == "valid":
            return GOOD
        reason = RevocationReason[row.revocation_reason].value if row.revocation_reason else None
        return CertState("revoked", row.revoked_at, reason)

    @property
    def following(self) -> bool:
        """Whether the change feed has its position: every change after a status read made from
        now on will be returned by :meth:`changes`."""
        return self._feed.cursor is not None

    def follow(self) -> None:
        """Take the change feed's position if not taken yet (blocking). Call before the first
        status read whose answer is kept (cached), so no change after it can be missed."""
        with self._feed_lock:
            if self._feed.cursor is None:
                with self.db.read() as conn:
                    self._feed.read(conn)

    def changes(self) -> list[tuple[str, int]]:
        """(issuer, serial) of every revocation or release recorded since the last call (the first
        call only takes the position). Blocking."""
        with self._feed_lock, self.db.read() as conn:
            rows = self._feed.read(conn)
        return [(r.issuer_id, int(r.serial, 16)) for r in rows]
