"""JSON-lines event log for SIEM: one object per line, aware-UTC timestamps."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gateway.clock import Clock, SystemClock

SA_UP = "ike_sa_up"
SA_DOWN = "ike_sa_down"
CHILD_UP = "child_sa_up"
CHILD_DOWN = "child_sa_down"
REKEY = "ike_sa_rekey"
CHILD_REKEY = "child_sa_rekey"
AUTH_FAILED = "auth_failed"
REVOCATION = "revocation_event"
PROPOSAL_REFUSED = "proposal_refused"
AUTH_ROUND = "auth_round_done"  # RFC 4739: first (certificate) round accepted
EAP_STARTED = "eap_started"
RADIUS_ANSWER = "radius_answer"
EAP_SUCCESS = "eap_success"
ACCOUNTING = "radius_accounting"
DISCONNECT = "radius_disconnect"
REAUTH_DUE = "reauth_deadline"


@dataclass
class EventLog:
    """Writes events to a file (append) or stderr; keeps the last few in memory."""

    path: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    recent: list[dict[str, Any]] = field(default_factory=list)
    _fh: IO[str] | None = None

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event": event, **fields}
        line = json.dumps(record, sort_keys=True, default=str)
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8") if self.path else sys.stderr
        self._fh.write(line + "\n")
        self._fh.flush()
        self.recent = [*self.recent[-199:], record]
