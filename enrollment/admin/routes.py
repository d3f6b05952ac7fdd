"""``/admin/v1`` (HTTPS only): the admin API, OpenAPI at ``/admin/v1/openapi.json``.

One app serves the whole admin surface: the routes here (certificates, revocations, deliveries,
devices, gateways, tokens) and those other packages contribute through the ``ikepki.admin_routes``
entry point group (EST registrations under ``/admin/v1/est``, SCEP challenges under
``/admin/v1/scep``). The shared pieces are the core's (:mod:`ca.service.admin`): one
authenticator and role check, one body bound, RFC 9457 problem documents for every error, and an
audit record of every call whatever its outcome (actor, role, method, path, status, client).
401: no or unknown credential (RFC 6750 §3, ``WWW-Authenticate: Bearer``); 403: the role is too
low. Neither changes anything else.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import Response

from ca.errors import ErrorKind, PKIError
from ca.model import MAX_QUERY_OFFSET, CertificateQuery, CertStatus, Requester, parse_serial
from ca.ports import ServiceKeys
from ca.revocation import live_session_probe, parse_reason, revoke_selected
from ca.service.admin import (
    CHANNEL,
    PREFIX,
    PROBLEM_RESPONSES,
    Admin,
    AdminAuthenticator,
    AdminGate,
    Principal,
    Revoker,
    Viewer,
    install_problem_handlers,
    load_admin_routes,
)
from ca.service.mounts import HTTPS, HttpMount
from enrollment.admin import service
from enrollment.admin.models import (
    CertificateList,
    CertificateOut,
    DeliveryOut,
    DeliveryQuery,
    DeviceBlock,
    DeviceOut,
    GatewayHealth,
    GatewayIn,
    GatewayOut,
    GatewayPatch,
    RevocationRequest,
    RevocationResult,
    TokenIn,
    TokenOut,
    WhoAmI,
)
from enrollment.admin.settings import AdminSettings

log = logging.getLogger("ikepki.admin")


def create_app(dep: ServiceKeys) -> Any:
    """The admin app (with every contributed router) behind its :class:`AdminGate`."""
    settings = dep.settings_for(AdminSettings, "admin")
    app = FastAPI(title="ikepki admin API", version="1", openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None)
    app.state.deployment = dep
    app.state.settings = settings
    app.state.admin_auth = AdminAuthenticator(dep.store, dep.clock, settings.cert_roles)
    app.router.responses = dict(PROBLEM_RESPONSES)  # merged into every route's OpenAPI responses
    install_problem_handlers(app)
    _routes(app, dep, settings)
    limits: list[tuple[str, int]] = []
    for contribution in load_admin_routes(dep):
        app.include_router(contribution.router, prefix=PREFIX + contribution.prefix,
                           tags=[contribution.tag] if contribution.tag else None, responses=PROBLEM_RESPONSES)
        if contribution.max_body_bytes is not None:
            limits.append((PREFIX + contribution.prefix, contribution.max_body_bytes))
    return AdminGate(app, dep.store, dep.audit, dep.clock, settings.max_body_bytes, limits)


def requester(p: Principal) -> Requester:
    return Requester(CHANNEL, p.name, p.source)


def _routes(app: FastAPI, dep: ServiceKeys, settings: AdminSettings) -> None:
    @app.get(f"{PREFIX}/whoami", response_model=WhoAmI)
    def whoami(p: Viewer) -> WhoAmI:
        return WhoAmI(name=p.name, role=p.role, method=p.method, source=p.source)

    # -- certificates -------------------------------------------------------------------------

    @app.get(f"{PREFIX}/certificates", response_model=CertificateList)
    def search(p: Viewer, serial: str | None = None, subject: Annotated[str | None, Query(max_length=255)] = None,
               san: Annotated[str | None, Query(max_length=255)] = None,
               device_id: Annotated[str | None, Query(max_length=255)] = None,
               ek_fingerprint: Annotated[str | None, Query(max_length=128)] = None,
               profile: Annotated[str | None, Query(max_length=32)] = None,
               status: Annotated[str | None, Query(pattern="^(valid|revoked|hold)$")] = None,
               user: Annotated[str | None, Query(max_length=1024)] = None,
               expires_before: datetime | None = None, expires_after: datetime | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0, le=MAX_QUERY_OFFSET)] = 0
               ) -> CertificateList:
        q = CertificateQuery(serial=parse_serial(serial) if serial else None, subject_contains=subject,
                             san=san, profile=profile, status=CertStatus(status) if status else None,
                             device_id=device_id, ek_fingerprint=ek_fingerprint, expires_before=expires_before,
                             expires_after=expires_after, user=user, limit=limit, offset=offset)
        items = [CertificateOut.of(i) for i in dep.store.search(q)]
        return CertificateList(items=items, count=len(items))

    @app.get(f"{PREFIX}/certificates/{{serial}}", response_model=CertificateOut)
    def certificate(serial: str, p: Viewer) -> CertificateOut:
        info = dep.store.get(parse_serial(serial))
        if info is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial {serial[:50]}")
        return CertificateOut.of(info)

    # -- revocations --------------------------------------------------------------------------

    @app.post(f"{PREFIX}/revocations", response_model=RevocationResult)
    def revoke(body: RevocationRequest, p: Viewer) -> RevocationResult:
        """Revoke (or hold) the selected certificates. ``dry_run`` needs viewer, execution revoker."""
        if not body.dry_run and not p.can("revoker"):
            raise PKIError(ErrorKind.FORBIDDEN, f"role {p.role} may not revoke (needs revoker)")
        if len(body.serials) > settings.max_serials:
            raise PKIError(ErrorKind.BAD_REQUEST, f"at most {settings.max_serials} serials per request")
        out = revoke_selected(dep.store, dep.authority, service.selector(body), parse_reason(body.reason, body.hold),
                              requester(p), body.block_device, body.dry_run, body.invalidity_date,
                              settings.max_targets, live_session_probe([dep.root]) if body.dry_run else None)
        return RevocationResult(dry_run=out.dry_run, reason=out.reason.name,
                                targets=[CertificateOut.of(t) for t in out.targets],
                                revoked=[t.serial_hex for t in out.revoked],
                                unchanged=[t.serial_hex for t in out.unchanged],
                                not_found=[format(s, "x") for s in out.not_found],
                                blocked_devices=out.blocked_devices, gateways=out.gateways, live_sas=out.live_sas)

    @app.delete(f"{PREFIX}/revocations/{{serial}}", response_model=CertificateOut)
    def release_hold(serial: str, p: Revoker) -> CertificateOut:
        """Release a certificateHold (RFC 5280 §5.3.1): the certificate is valid again."""
        return CertificateOut.of(dep.authority.release_hold(parse_serial(serial), requester(p)))

    @app.post(f"{PREFIX}/deliveries/search", response_model=list[DeliveryOut])
    def deliveries(body: DeliveryQuery, p: Viewer) -> list[DeliveryOut]:
        """Push delivery state per (event, gateway)."""
        serials = [parse_serial(s) for s in body.serials] or None
        gid = None
        if body.gateway:
            gid = next((g["id"] for g in dep.store.gateways() if g["name"] == body.gateway), None)
            if gid is None:
                raise PKIError(ErrorKind.NOT_FOUND, f"no gateway {body.gateway!r}")
        rows = dep.store.deliveries(serials, gateway_id=gid, status=body.status, limit=body.limit)
        return [DeliveryOut.of(r) for r in rows[:body.limit]]

    # -- devices ------------------------------------------------------------------------------

    @app.get(f"{PREFIX}/devices/{{device_id}}", response_model=DeviceOut)
    def device(device_id: str, p: Viewer) -> DeviceOut:
        row = dep.store.device(device_id)
        if row is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no device {device_id[:100]!r}")
        return DeviceOut(**{k: row[k] for k in DeviceOut.model_fields})

    @app.post(f"{PREFIX}/devices/{{device_id}}/block", response_model=DeviceOut)
    def block(device_id: str, body: DeviceBlock, p: Revoker) -> DeviceOut:
        dep.authority.block_device(device_id, requester(p), body.reason, blocked=True)
        return device(device_id, p)

    @app.delete(f"{PREFIX}/devices/{{device_id}}/block", response_model=DeviceOut)
    def unblock(device_id: str, p: Revoker) -> DeviceOut:
        dep.authority.block_device(device_id, requester(p), None, blocked=False)
        return device(device_id, p)

    # -- gateways -----------------------------------------------------------------------------

    def gateway_row(name: str) -> dict[str, Any]:
        row = next((g for g in dep.store.gateway_health() if g["name"] == name), None)
        if row is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no gateway {name[:128]!r}")
        return row

    @app.get(f"{PREFIX}/gateways", response_model=list[GatewayOut])
    def gateways(p: Viewer) -> list[GatewayOut]:
        """Registered gateways with push health: pending deliveries, last success, last error."""
        return [GatewayOut.of(g) for g in dep.store.gateway_health()]

    @app.post(f"{PREFIX}/gateways", response_model=GatewayOut, status_code=201)
    def add_gateway(body: GatewayIn, p: Admin) -> GatewayOut:
        service.check_gateway_url(body.kind, body.url)
        now = dep.clock.now()
        dep.store.add_gateway(body.name, body.kind, body.url, now)
        dep.audit.append(now, p.name, "gateway-add", CHANNEL, source=p.source, gateway=body.name, kind=body.kind,
                         url=body.url)
        return GatewayOut.of(gateway_row(body.name))

    @app.get(f"{PREFIX}/gateways/{{name}}", response_model=GatewayOut)
    def gateway(name: str, p: Viewer) -> GatewayOut:
        return GatewayOut.of(gateway_row(name))

    @app.get(f"{PREFIX}/gateways/{{name}}/health", response_model=GatewayHealth)
    def gateway_probe(name: str, p: Viewer) -> GatewayHealth:
        """Push state plus a live probe: VICI ``list-sas`` / the responder's ``/v1/sas``."""
        row = gateway_row(name)
        out = GatewayHealth.model_validate(GatewayOut.of(row).model_dump())
        if row["kind"] in ("vici", "responder"):
            sessions = live_session_probe([dep.root]).sessions([{**row, "enabled": True}])
            out.reachable = name in sessions
            out.live_peers = len({k for k in sessions[name].peers if not k.startswith("dn:")}) \
                if name in sessions else None
        return out

    @app.patch(f"{PREFIX}/gateways/{{name}}", response_model=GatewayOut)
    def patch_gateway(name: str, body: GatewayPatch, p: Admin) -> GatewayOut:
        now = dep.clock.now()
        action = "gateway-enable" if body.enabled else "gateway-disable"
        dep.store.set_gateway_enabled(  # audit row and file line inside the transaction
            name, body.enabled, now, requester(p),
            before_commit=lambda: dep.audit.append(now, p.name, action, CHANNEL, source=p.source, gateway=name,
                                                   enabled=body.enabled))
        return GatewayOut.of(gateway_row(name))

    # -- admin tokens -------------------------------------------------------------------------

    @app.get(f"{PREFIX}/tokens", response_model=list[TokenOut])
    def list_tokens(p: Admin) -> list[TokenOut]:
        return [TokenOut(**t) for t in dep.store.admin_tokens()]

    @app.post(f"{PREFIX}/tokens", response_model=TokenOut, status_code=201)
    def create_token(body: TokenIn, p: Admin) -> TokenOut:
        """Create a token; its value is in this response only (the store keeps a SHA-256)."""
        import secrets

        value = secrets.token_urlsafe(32)
        now = dep.clock.now()
        dep.store.add_admin_token(  # audit row and file line inside the transaction (never the token value)
            body.name, body.role, value, now, requester(p),
            before_commit=lambda: dep.audit.append(now, p.name, "admin-token-create", CHANNEL, source=p.source,
                                                   token=body.name, role=body.role))
        return TokenOut(name=body.name, role=body.role, created_at=now, token=value)

    @app.delete(f"{PREFIX}/tokens/{{name}}", status_code=204)
    def disable_token(name: str, p: Admin) -> Response:
        now = dep.clock.now()
        dep.store.disable_admin_token(
            name, now, requester(p),
            before_commit=lambda: dep.audit.append(now, p.name, "admin-token-disable", CHANNEL, source=p.source,
                                                   token=name))
        return Response(status_code=204)


def http_mounts(deployment: ServiceKeys) -> list[HttpMount]:
    return [HttpMount(PREFIX, create_app(deployment), frozenset({HTTPS}))]
