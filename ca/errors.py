"""One error type for the PKI core; each protocol edge maps ``ErrorKind`` once."""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    BAD_REQUEST = "badRequest"  # malformed input
    BAD_CSR = "badCSR"  # CSR unparsable, bad signature, weak key
    REJECTED_IDENTIFIER = "rejectedIdentifier"  # SAN/identity not allowed by profile or policy
    UNAUTHORIZED = "unauthorized"  # authentication missing or wrong
    FORBIDDEN = "forbidden"  # authenticated but not allowed
    NOT_FOUND = "notFound"
    CONFLICT = "conflict"  # state does not allow the operation (already revoked, ...)
    BLOCKED = "blocked"  # device or identity blocked from enrollment
    UNAVAILABLE = "unavailable"  # HSM or database unavailable: try later
    CONFIG = "config"  # invalid configuration
    INTERNAL = "internal"


class PKIError(Exception):
    """A failure with a kind the protocol edges translate (ACME problem, EST status, ...)."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return self.detail
