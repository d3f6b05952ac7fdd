"""Refusals at the hook edge, each an RFC 9457 problem type (``urn:ikepki:hooks:<slug>``)."""

from __future__ import annotations

import enum


class Refusal(enum.Enum):
    """Why a hook request was refused: (HTTP status, problem slug, title)."""

    UNKNOWN_SOURCE = (404, "unknown-source", "Unknown hook source")
    UNAUTHENTICATED = (401, "unauthenticated", "Missing or wrong credentials")
    BAD_SIGNATURE = (401, "bad-signature", "Signature does not verify")
    STALE_TIMESTAMP = (401, "stale-timestamp", "Timestamp outside the tolerance")
    REPLAY = (409, "replay", "Message id already seen")
    TOO_LARGE = (413, "too-large", "Body too large")
    UNSUPPORTED_MEDIA = (415, "unsupported-media-type", "Body must be application/json")
    MALFORMED = (400, "malformed", "Malformed payload")
    UNAVAILABLE = (503, "unavailable", "Temporarily unavailable")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def type_uri(self) -> str:
        return f"urn:ikepki:hooks:{self.value[1]}"

    @property
    def title(self) -> str:
        return self.value[2]


class HookRefused(Exception):
    """A request the edge refuses; nothing was changed."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal
        self.detail = detail
