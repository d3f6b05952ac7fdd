"""Reading the core's ``outbox_events`` as a feed of revocations/releases, once each.

Outbox ids are handed out at INSERT but rows become visible at COMMIT. On SQLite writers are
serialised (BEGIN IMMEDIATE), so ids become visible in order; on PostgreSQL a slower revocation
transaction (a large batch, another replica) can commit id N after the feed has already read
N+1, and a plain ``id > cursor`` poll would never see it: the OCSP cache would keep answering
"good" for the revoked certificate and the CRL publisher would not be woken. So ids the feed
skipped are remembered and looked for again until ``gap_seconds`` have passed (any revocation
transaction commits well within that); ids lost to a rolled-back transaction simply expire.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, or_, select

from ca.store.sql import OUTBOX


class OutboxFeed:
    def __init__(self, batch: int = 5000, gap_seconds: float = 600.0, max_gaps: int = 1000) -> None:
        self.batch = batch
        self.gap_seconds = gap_seconds
        self.max_gaps = max_gaps
        self.cursor: int | None = None
        self.gaps: dict[int, float] = {}  # skipped id -> give up at (monotonic)

    def read(self, conn: Any) -> list[Any]:
        """Rows (id, issuer_id, serial) not returned before; the first call only takes the position."""
        if self.cursor is None:
            self.cursor = int(conn.execute(select(func.coalesce(func.max(OUTBOX.c.id), 0))).scalar_one())
            return []
        now = time.monotonic()
        self.gaps = {i: until for i, until in self.gaps.items() if until > now}
        cond = OUTBOX.c.id > self.cursor
        if self.gaps:
            cond = or_(cond, OUTBOX.c.id.in_(sorted(self.gaps)))
        rows = conn.execute(select(OUTBOX.c.id, OUTBOX.c.issuer_id, OUTBOX.c.serial).where(cond)
                            .order_by(OUTBOX.c.id).limit(self.batch)).all()
        for r in rows:
            if self.gaps.pop(r.id, None) is None and r.id > self.cursor:
                skipped = range(max(self.cursor + 1, r.id - self.max_gaps), r.id)
                self.gaps.update(dict.fromkeys(skipped, now + self.gap_seconds))
                self.cursor = r.id
        if len(self.gaps) > self.max_gaps:
            self.gaps = dict(sorted(self.gaps.items())[-self.max_gaps:])
        return list(rows)
