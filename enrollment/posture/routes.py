"""HTTP edge of device posture.

``POST /posture/v1/nonce`` ``{"akCertificate": b64url(DER)}`` → 201 ``{"nonce", "expires", "pcrSelection"}``:
a single-use 32-byte challenge bound to that AK (:mod:`enrollment.posture.service`).

``POST /posture/v1/evidence`` (body: :mod:`enrollment.posture.evidence`) → 201 ``{"id", "device", "verdict",
"reasons", "deviceClass", "expires", "heldSerials"}``.  A refused *verdict* is still 201 (the evidence
was genuine and is recorded); evidence that does not verify is 400 ``badAttestationStatement`` with
``reason`` (malformed, unknown-ak, bad-nonce, bad-signature, not-a-quote, wrong-qualifying-data,
pcr-selection, pcr-digest, event-log) and records nothing but an audit line.  Both answer 404
("device posture is not configured") when posture is off; the agent then enrolls without posture.
Problems use the ACME error namespace like ``/attest`` (RFC 7807).

Admin (``ikepki.admin_routes``): ``GET /admin/v1/posture?device=ID`` (viewer) shows the latest evidence
and verdict with history; ``POST /admin/v1/posture`` ``{"device", "verdict", "reason"}`` (revoker)
records an operator verdict (``compliant`` clears an earlier operator verdict).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ca.errors import PKIError
from ca.model import Requester
from ca.ports import CoreServices
from ca.service.admin import CHANNEL, PROBLEM_RESPONSES, AdminRoutes, Revoker, Viewer
from ca.service.caller import client_ip
from ca.service.mounts import HTTPS, HttpMount
from enrollment.attestation.device_api import MAX_BODY, Problem, problem_from_pki, read_json_object
from enrollment.posture.errors import EvidenceError
from enrollment.posture.evidence import Evidence, b64d
from enrollment.posture.policy import Verdict
from enrollment.posture.service import PostureService
from enrollment.posture.settings import PostureSettings

PREFIX = "/posture"
MAX_ADMIN_BODY = 8 * 1024
MAX_EVIDENCE_BODY = 2 * 1024 * 1024  # a 1 MiB event log in base64url plus the quote and facts


def _problem(exc: EvidenceError) -> Problem:
    return Problem("badAttestationStatement", f"{exc.reason.value}: {exc.detail}", reason=exc.reason.value)


def _run(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except EvidenceError as exc:
        raise _problem(exc) from None
    except PKIError as exc:
        raise problem_from_pki(exc) from None


def build_app(service: PostureService) -> Starlette:
    def disabled() -> Response:  # the agent skips posture on this answer
        return Problem("notFound", "device posture is not configured on this server", 404).response()

    async def handle(request: Request, limit: int, parse: Callable[[dict[str, Any]], Any],
                     call: Callable[[Any, str], Any]) -> Response:
        """Bounded JSON body -> ``parse`` -> ``call`` off the event loop -> 201, or a problem."""
        if not service.enabled:
            return disabled()
        try:
            body = await read_json_object(request, limit)
            try:
                parsed = parse(body)
            except EvidenceError as exc:
                raise _problem(exc) from None
            result = await anyio.to_thread.run_sync(_run, call, parsed, client_ip(request.scope))
        except Problem as problem:
            return problem.response()
        return JSONResponse(result, 201)

    async def nonce(request: Request) -> Response:
        return await handle(request, MAX_BODY, lambda body: b64d(body.get("akCertificate"), "akCertificate", 8192),
                            service.nonce)

    async def evidence(request: Request) -> Response:
        return await handle(request, MAX_EVIDENCE_BODY, Evidence.parse, service.submit)

    return Starlette(routes=[Route("/v1/nonce", nonce, methods=["POST"]),
                             Route("/v1/evidence", evidence, methods=["POST"])])


def posture_service(deployment: CoreServices) -> PostureService:
    return PostureService(deployment, deployment.settings_for(PostureSettings, "posture"))


def http_mounts(deployment: CoreServices) -> list[HttpMount]:
    """Entry point (group ikepki.http): nonce and evidence on the HTTPS listener."""
    return [HttpMount(PREFIX, build_app(posture_service(deployment)), frozenset({HTTPS}), "posture",
                      strip_prefix=True)]


class SetVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str = Field(min_length=1, max_length=255)
    verdict: Literal["compliant", "quarantine", "refused"]
    reason: str = Field(min_length=1, max_length=500)


def admin_router(service: PostureService) -> APIRouter:
    router = APIRouter(responses=PROBLEM_RESPONSES)

    @router.get("")
    async def show(p: Viewer, device: Annotated[str, Query(min_length=1, max_length=255)],
                   limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        """The device's latest evidence and verdict, and earlier ones (newest first)."""
        return await anyio.to_thread.run_sync(service.show, device, limit)  # type: ignore[no-any-return]

    @router.post("")
    async def set_verdict(p: Revoker, body: SetVerdict) -> dict[str, Any]:
        """Record an operator verdict; a downgrade holds the certificates it no longer allows (pushed)."""
        return await anyio.to_thread.run_sync(  # type: ignore[no-any-return]
            service.set_verdict, body.device, Verdict(body.verdict), body.reason,
            Requester(CHANNEL, p.name, p.source))

    return router


def admin_routes(deployment: CoreServices) -> list[AdminRoutes]:
    """Entry point ``ikepki.admin_routes: posture``."""
    return [AdminRoutes("/posture", admin_router(posture_service(deployment)), MAX_ADMIN_BODY, "posture")]
