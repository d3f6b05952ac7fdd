"""The device-posture port of the core: who may lower a device's posture without importing the
posture package (the automated response package, for one).

``enrollment.posture`` implements :class:`PostureRecorder` and registers it under the entry point
group ``ikepki.posture`` (a callable ``(deployment) -> PostureRecorder``). A verdict worse than the
device's current one holds the certificates it no longer allows (pushed to gateways like any hold).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol

from ca.errors import ErrorKind, PKIError
from ca.model import Requester

log = logging.getLogger("ikepki.posture")
POSTURE_GROUP = "ikepki.posture"
Verdict = Literal["compliant", "quarantine", "refused"]


class PostureRecorder(Protocol):
    def record_verdict(self, device_id: str, verdict: Verdict, reason: str, requester: Requester,
                       origin: str = "automated") -> list[str]:
        """Record the verdict; returns the serials (hex) it put on hold."""
        ...


def posture_recorder(deployment: Any) -> PostureRecorder:
    """The recorder registered under ``ikepki.posture`` (first by name); CONFIG error when none is."""
    for ep in sorted(entry_points(group=POSTURE_GROUP), key=lambda e: e.name):
        recorder: PostureRecorder = ep.load()(deployment)
        return recorder
    raise PKIError(ErrorKind.CONFIG, "no device posture package is installed (entry point ikepki.posture)")
