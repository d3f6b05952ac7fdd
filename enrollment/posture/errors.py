"""Why posture evidence was rejected: one machine-readable reason per failure."""

from __future__ import annotations

from enum import StrEnum


class EvidenceReason(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_AK = "unknown-ak"
    BAD_NONCE = "bad-nonce"
    BAD_SIGNATURE = "bad-signature"
    NOT_A_QUOTE = "not-a-quote"
    WRONG_QUALIFYING_DATA = "wrong-qualifying-data"
    PCR_SELECTION = "pcr-selection"
    PCR_DIGEST = "pcr-digest"
    EVENT_LOG = "event-log"


class EvidenceError(Exception):
    """Evidence that does not verify; nothing is recorded as the device's posture."""

    def __init__(self, reason: EvidenceReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason, self.detail = reason, detail
