"""The error edge of the device API (``/attest`` and ``/posture``): problem documents in the ACME
error namespace (RFC 7807 / RFC 9457 §3.1; ``urn:ietf:params:acme:error:*``, RFC 8555 §6.7, because
the same devices speak ACME) and the bounded JSON body reader both edges share."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ca.errors import ErrorKind, PKIError
from ca.service.bodies import BodyError, BodyTooLarge, read_body

MAX_BODY = 32 * 1024
NS = "urn:ietf:params:acme:error:"


class Problem(Exception):
    """An RFC 7807 problem (ACME error namespace) raised anywhere below the edge."""

    def __init__(self, type_: str, detail: str, status: int = 400, **extra: Any) -> None:
        super().__init__(detail)
        self.type, self.detail, self.status, self.extra = type_, detail, status, extra

    def response(self) -> JSONResponse:
        body = {"type": NS + self.type, "detail": self.detail, "status": self.status, **self.extra}
        headers = {"Retry-After": "5"} if self.status == 503 else None
        return JSONResponse(body, self.status, headers=headers, media_type="application/problem+json")


PKI_STATUS = {ErrorKind.BLOCKED: ("unauthorized", 403), ErrorKind.UNAUTHORIZED: ("unauthorized", 403),
              ErrorKind.FORBIDDEN: ("unauthorized", 403), ErrorKind.BAD_REQUEST: ("malformed", 400),
              ErrorKind.UNAVAILABLE: ("serverInternal", 503)}


def problem_from_pki(exc: PKIError) -> Problem:
    type_, status = PKI_STATUS.get(exc.kind, ("serverInternal", 500))
    return Problem(type_, exc.detail if status < 500 or status == 503 else "internal error", status)


async def read_json_object(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The body as a JSON object: ``application/json`` only (415), at most ``limit`` bytes (413)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Problem("malformed", "Content-Type must be application/json", 415)
    try:
        body = await read_body(request.receive, limit, request.headers.get("content-length"))
    except BodyTooLarge as exc:
        raise Problem("malformed", str(exc), 413) from None
    except BodyError as exc:
        raise Problem("malformed", str(exc)) from None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Problem("malformed", "body is not JSON") from None
    if not isinstance(data, dict):
        raise Problem("malformed", "body must be a JSON object")
    return data
