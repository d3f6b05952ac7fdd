"""Admin endpoints for identity-provider users, under ``/admin/v1/users`` (the one admin app:
credentials, roles, problem documents and audit are :mod:`ca.service.admin`'s). Role viewer:

- ``GET /admin/v1/users/certificates?user=…``: the certificates of a user (``<iss>#<sub>``,
  ``sub`` or email), each with the recorded identity (issuer, subject, email, groups, roles,
  device, session). Revoking them: ``POST /admin/v1/revocations`` with ``{"user": …}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel

from ca.model import CertificateQuery, CertStatus
from ca.ports import CoreServices
from ca.service.admin import PROBLEM_RESPONSES, Viewer


class UserOut(BaseModel):
    identity: str
    issuer: str
    subject: str
    provider: str
    email: str | None
    groups: list[str]
    roles: list[str]
    device: str | None


class UserCertificateOut(BaseModel):
    serial: str
    status: str
    profile: str
    sans: list[str]
    not_before: datetime
    not_after: datetime
    user: UserOut | None


def admin_router(deployment: CoreServices) -> APIRouter:
    router = APIRouter()

    @router.get("/certificates", response_model=list[UserCertificateOut], responses=PROBLEM_RESPONSES)
    async def user_certificates(p: Viewer, user: Annotated[str, Query(min_length=1, max_length=1024)],
                                status: Annotated[str | None, Query(pattern="^(valid|revoked|hold)$")] = None,
                                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[UserCertificateOut]:
        def load() -> list[UserCertificateOut]:
            store = deployment.store
            rows = store.search(CertificateQuery(user=user, status=CertStatus(status) if status else None,
                                                 limit=limit))
            users = store.users([r.serial for r in rows])
            out = []
            for r in rows:
                u = users.get(r.serial)
                out.append(UserCertificateOut(
                    serial=r.serial_hex, status=r.status.value, profile=r.profile, sans=list(r.sans),
                    not_before=r.not_before, not_after=r.not_after,
                    user=UserOut(identity=u.uri, issuer=u.issuer, subject=u.subject, provider=u.provider,
                                 email=u.email, groups=list(u.groups), roles=list(u.roles), device=u.device)
                    if u else None))
            return out

        return await anyio.to_thread.run_sync(load)

    return router
