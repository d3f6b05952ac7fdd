"""ACME problem documents (RFC 7807, RFC 8555 §6.7) and the one mapping from core errors."""

from __future__ import annotations

from typing import Any

from ca.errors import ErrorKind, PKIError

NS = "urn:ietf:params:acme:error:"
ALGORITHMS = ("ES256", "ES384", "RS256", "EdDSA")

# problem type -> HTTP status
STATUS = {
    "accountDoesNotExist": 400, "alreadyRevoked": 400, "badCSR": 400, "badNonce": 400, "badPublicKey": 400,
    "badRevocationReason": 400, "badSignatureAlgorithm": 400, "caa": 403, "compound": 403, "connection": 400,
    "dns": 400, "externalAccountRequired": 400, "incorrectResponse": 403, "invalidContact": 400, "malformed": 400,
    "orderNotReady": 403, "rateLimited": 429, "rejectedIdentifier": 400, "serverInternal": 500, "tls": 400,
    "unauthorized": 403, "unsupportedContact": 400, "unsupportedIdentifier": 400, "userActionRequired": 403,
    "invalidProfile": 400, "conflict": 409, "notFound": 404, "methodNotAllowed": 405,
    "unsupportedMediaType": 415, "payloadTooLarge": 413,
}


class AcmeProblem(Exception):
    """An RFC 7807 problem; ``type`` is the short RFC 8555 §6.7 name."""

    def __init__(self, type: str, detail: str, status: int | None = None, *, retry_after: int | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.type = type
        self.detail = detail
        self.status = status or STATUS.get(type, 400)
        self.retry_after = retry_after
        self.headers = headers or {}
        self.extra = extra

    def document(self) -> dict[str, Any]:
        wire_type = self.type if self.type not in ("conflict", "notFound", "methodNotAllowed",
                                                   "unsupportedMediaType", "payloadTooLarge") else "malformed"
        doc: dict[str, Any] = {"type": NS + wire_type, "detail": self.detail, "status": self.status}
        doc.update(self.extra)
        return doc


def malformed(detail: str, status: int = 400) -> AcmeProblem:
    return AcmeProblem("malformed", detail, status)


def unauthorized(detail: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail)


def bad_alg(detail: str) -> AcmeProblem:
    return AcmeProblem("badSignatureAlgorithm", detail, algorithms=list(ALGORITHMS))


_KIND_TO_PROBLEM = {
    ErrorKind.BAD_REQUEST: ("malformed", 400), ErrorKind.BAD_CSR: ("badCSR", 400),
    ErrorKind.REJECTED_IDENTIFIER: ("rejectedIdentifier", 400), ErrorKind.UNAUTHORIZED: ("unauthorized", 403),
    ErrorKind.FORBIDDEN: ("unauthorized", 403), ErrorKind.NOT_FOUND: ("malformed", 404),
    ErrorKind.CONFLICT: ("malformed", 409), ErrorKind.BLOCKED: ("unauthorized", 403),
    ErrorKind.UNAVAILABLE: ("serverInternal", 503), ErrorKind.CONFIG: ("serverInternal", 500),
    ErrorKind.INTERNAL: ("serverInternal", 500),
}


def from_pki_error(exc: PKIError) -> AcmeProblem:
    """The single mapping of core error kinds to ACME problem types."""
    type_, status = _KIND_TO_PROBLEM.get(exc.kind, ("serverInternal", 500))
    problem = AcmeProblem(type_, exc.detail, status)
    if exc.kind is ErrorKind.UNAVAILABLE:
        problem.retry_after = 5
    return problem
