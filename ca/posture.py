"""The device-posture port of the core (issue 17): what enrollment protocols and the automated
response package ask of device posture without importing the posture package.

``enrollment.posture`` implements :class:`DevicePosture` and registers a factory
``(deployment) -> DevicePosture`` under the entry point group ``ikepki.posture``. ACME finalize asks
it for the posture mark of an attested device (``issuance_mark``); the response package lowers a
device's posture (``record_verdict``): a verdict worse than the device's current one holds the
certificates it no longer allows (pushed to gateways like any hold); the console shows a device's
latest verdict (``latest``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal, Protocol

from ca.model import PostureMark, Requester

if TYPE_CHECKING:  # ca.ports imports the Authority, which must stay free to ask for posture
    from ca.ports import CoreServices

log = logging.getLogger("ikepki.posture")
POSTURE_GROUP = "ikepki.posture"
Verdict = Literal["compliant", "quarantine", "refused"]


@dataclass(frozen=True)
class PostureSummary:
    """A device's latest recorded verdict: from TPM-quoted evidence (``reasons`` are the checks that
    failed) or from an operator / automated input (``reasons``: why)."""

    device_id: str
    verdict: str  # compliant | quarantine | refused
    at: datetime
    reasons: tuple[str, ...]
    origin: str  # evidence | operator | automated
    principal: str  # the device (evidence) or who set it
    device_class: str
    expires_at: datetime  # the evidence's expiry


class DevicePosture(Protocol):
    def record_verdict(self, device_id: str, verdict: str, reason: str, requester: Requester,
                       origin: str = "automated") -> list[str]:
        """Record a verdict from outside the evidence path; returns the serials (hex) it put on hold."""
        ...

    def issuance_mark(self, device_id: str) -> tuple[PostureMark, int] | None:
        """The mark for the device's certificate now and the evidence record it rests on; None when
        posture is off; PKIError(UNAUTHORIZED) when refused or without fresh evidence."""
        ...

    def record_issued(self, evidence_id: int, serial_hex: str) -> None:
        """Remember which certificate the evidence produced."""
        ...

    def latest(self, device_id: str) -> PostureSummary | None:
        """The device's newest verdict record; None when none was ever recorded."""
        ...


def device_posture(deployment: CoreServices) -> DevicePosture | None:
    """The implementation registered under ``ikepki.posture`` (first by name); None when none is."""
    for ep in sorted(entry_points(group=POSTURE_GROUP), key=lambda e: e.name):
        posture: DevicePosture = ep.load()(deployment)
        return posture
    return None
