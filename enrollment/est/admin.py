"""Admin endpoints of the EST server, served under ``/admin/v1/est`` by the one admin app
(:mod:`enrollment.admin`; credentials, role check, body bound, problem documents and audit are
:mod:`ca.service.admin`'s). Role admin:

- ``POST /admin/v1/est/registrations``: bulk MDM pre-authorisation; answers each device's
  one-time secret exactly once (only a SHA-256 is stored).
- ``GET /admin/v1/est/registrations/{device_id}``: state of one registration (no secret).
- ``GET /admin/v1/est/pending``, ``POST /admin/v1/est/pending/{id}/approve|reject``: manual approval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from ca.errors import ErrorKind, PKIError
from ca.service.admin import Admin
from enrollment.est.registrations import MAX_BULK, DeviceRegistration, Pending, Registration
from enrollment.est.service import EstService

MAX_ADMIN_BODY = 4 * 1024 * 1024  # a bulk registration of MAX_BULK devices


class DeviceRegistrationRequest(BaseModel):
    model_config = {"extra": "forbid"}
    device_id: str = Field(min_length=1, max_length=255)
    profile: str = Field(min_length=1, max_length=32)
    sans: list[str] = Field(min_length=1, max_length=32)
    ek_fingerprint: str | None = Field(default=None, max_length=128)
    expires_hours: float | None = Field(default=None, gt=0, le=8760)


class RegistrationsRequest(BaseModel):
    model_config = {"extra": "forbid"}
    devices: list[DeviceRegistrationRequest] = Field(min_length=1, max_length=MAX_BULK)


class RegistrationSecretResponse(BaseModel):
    device_id: str
    secret: str
    expires_at: datetime


class RegistrationsResponse(BaseModel):
    registrations: list[RegistrationSecretResponse]


class RegistrationResponse(BaseModel):
    device_id: str
    profile: str
    sans: list[str]
    ek_fingerprint: str | None
    expires_at: datetime
    used: bool
    used_at: datetime | None
    used_by: str | None
    serial: str | None


class PendingResponse(BaseModel):
    id: str
    label: str
    principal: str
    device_id: str | None
    subject: str
    sans: list[str]
    status: str
    serial: str | None
    created_at: datetime


def registration_response(r: Registration) -> RegistrationResponse:
    return RegistrationResponse(device_id=r.device_id, profile=r.profile, sans=list(r.sans),
                                ek_fingerprint=r.ek_fingerprint, expires_at=r.expires_at, used=r.used,
                                used_at=r.used_at, used_by=r.used_by,
                                serial=format(r.serial, "x") if r.serial is not None else None)


def pending_response(p: Pending) -> PendingResponse:
    return PendingResponse(id=p.id, label=p.label, principal=p.principal, device_id=p.device_id, subject=p.subject,
                           sans=list(p.sans), status=p.status,
                           serial=format(p.serial, "x") if p.serial is not None else None, created_at=p.created_at)


def register_devices(service: EstService, devices: list[DeviceRegistration], actor: str) -> list[Any]:
    """Shared by the API and the CLI: profile names are checked against the label profiles."""
    known = {label.profile for label in service.settings.labels.values()}
    for d in devices:
        if d.device_id in service.settings.pipelines:
            raise PKIError(ErrorKind.BAD_REQUEST, f"device id {d.device_id!r} is the name of an EST pipeline")
        if d.profile not in known:
            raise PKIError(ErrorKind.BAD_REQUEST, f"device {d.device_id}: profile {d.profile!r} is not served "
                                                  f"by any EST label ({', '.join(sorted(known))})")
    dep = service.dep
    now = dep.clock.now()
    return service.registrations.register(  # the audit line inside the transaction: never unaudited
        devices, now, actor, service.settings.registration_default_hours,
        before_commit=lambda: dep.audit.append(now, actor, "est-register",
                                               "admin-api" if actor.startswith("admin:") else "cli",
                                               devices=[d.device_id for d in devices][:1000], count=len(devices)))


def decide_pending(service: EstService, pending_id: str, approve: bool, actor: str, channel: str) -> Any:
    """Shared by the API and the CLI: the decision and its audit line in one transaction (blocking:
    the API runs it in a worker thread)."""
    dep = service.dep
    now = dep.clock.now()
    return service.registrations.decide(
        pending_id, approve, now, actor,
        before_commit=lambda: dep.audit.append(now, actor, "est-approve" if approve else "est-reject", channel,
                                               pending=pending_id))


def admin_router(service: EstService) -> APIRouter:
    """The EST admin routes, served under ``/admin/v1/est`` by the one admin app (role admin)."""
    router = APIRouter()

    @router.post("/registrations", status_code=201)
    async def create_registrations(request: Request, p: Admin) -> RegistrationsResponse:
        """Bulk MDM pre-authorisation (RFC 7030 §3.3.2 HTTP-based client authentication secrets):
        each device's one-time secret is in this response only."""
        try:
            parsed = RegistrationsRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            err = exc.errors()[0]
            raise PKIError(ErrorKind.BAD_REQUEST, f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        devices = [DeviceRegistration(d.device_id, d.profile, tuple(d.sans), d.ek_fingerprint, d.expires_hours)
                   for d in parsed.devices]
        issued = await anyio.to_thread.run_sync(register_devices, service, devices, f"admin:{p.name}")
        return RegistrationsResponse(registrations=[
            RegistrationSecretResponse(device_id=i.device_id, secret=i.secret, expires_at=i.expires_at)
            for i in issued])

    @router.get("/registrations/{device_id}")
    async def get_registration(device_id: str, p: Admin) -> RegistrationResponse:
        found = await anyio.to_thread.run_sync(service.registrations.get, device_id)
        if found is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no registration for device {device_id[:100]!r}")
        return registration_response(found)

    @router.get("/pending")
    async def list_pending(p: Admin) -> list[PendingResponse]:
        return [pending_response(x) for x in await anyio.to_thread.run_sync(service.registrations.list_pending)]

    @router.post("/pending/{pending_id}/{decision}")
    async def decide(pending_id: str, decision: str, p: Admin) -> PendingResponse:
        actor = f"admin:{p.name}"
        if decision not in ("approve", "reject"):
            raise PKIError(ErrorKind.NOT_FOUND, "use …/approve or …/reject")
        result = await anyio.to_thread.run_sync(decide_pending, service, pending_id, decision == "approve", actor,
                                                "admin-api")
        return pending_response(result)

    return router
