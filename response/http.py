"""``POST /hooks/v1/<source>`` (HTTPS listener): alerts in, holds/revocations/blocks out.

Per source: its format (Alertmanager webhook v4, Keylime revocation notifier, Standard Webhooks
signed JSON) and its authentication (bearer token, RFC 6750 §2.1, compared as SHA-256 digests in
constant time; a TLS client certificate from the ikepki CA with a configured subject; Keylime's
RSA-PSS signature; Standard Webhooks HMAC with timestamp tolerance and remembered ids).
Refusals are RFC 9457 problem documents (``urn:ikepki:hooks:<slug>``), change nothing, and are
audited with the source name and client address. Accepted alerts are handled before the answer
(nothing is acknowledged that was not recorded).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import anyio
from cryptography import x509
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ca.errors import ErrorKind, PKIError
from ca.model import CertStatus
from ca.ports import ServiceKeys
from ca.service.bodies import BodyError, BodyTooLarge, InvalidContentLength, read_body
from ca.service.caller import client_ip
from ca.service.mounts import HTTPS, HttpMount
from response.alerts import Alert
from response.config import NAME, Source
from response.errors import HookRefused, Refusal
from response.formats import alertmanager, generic, keylime
from response.service import Response

PREFIX = "/hooks/v1"
log = logging.getLogger("ikepki.response")


def problem(refusal: Refusal, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """RFC 9457 §3 problem details."""
    return JSONResponse({"type": refusal.type_uri, "title": refusal.title, "status": refusal.status,
                         "detail": detail}, refusal.status, headers=headers, media_type="application/problem+json")


async def read_bounded(request: Request, limit: int) -> bytes:
    """The body, bounded by :func:`ca.service.bodies.read_body` (declared and streamed length)."""
    try:
        return await read_body(request.receive, limit, request.headers.get("content-length"))
    except (BodyTooLarge, InvalidContentLength):
        raise HookRefused(Refusal.TOO_LARGE, f"body over {limit} bytes") from None
    except BodyError as exc:  # the client went away
        raise HookRefused(Refusal.MALFORMED, str(exc)) from None


def check_bearer(source: Source, authorization: str | None) -> None:
    if source.bearer_sha256 is None:
        return
    scheme, _, value = (authorization or "").partition(" ")
    presented = hashlib.sha256(value.strip().encode()).digest()
    good = hmac.compare_digest(presented, source.bearer_sha256)  # constant time, whatever the scheme
    if not (good and scheme.lower() == "bearer"):
        raise HookRefused(Refusal.UNAUTHENTICATED, "a valid bearer token is required for this source")


def check_client_cert(source: Source, scope: Mapping[str, Any], deployment: ServiceKeys) -> None:
    """The TLS layer verified the chain to the ikepki CA; here: subject, validity, and the store's
    own record of that serial (same DER, valid, one of the source's ``client_cert_profiles``)."""
    wanted = source.config.client_cert_subject
    if not wanted:
        return
    der = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_der")
    if not der:
        raise HookRefused(Refusal.UNAUTHENTICATED, "a TLS client certificate is required for this source")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise HookRefused(Refusal.UNAUTHENTICATED, "unreadable client certificate") from None
    now = deployment.clock.now()
    if cert.subject.rfc4514_string() != wanted or not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise HookRefused(Refusal.UNAUTHENTICATED, "client certificate not accepted for this source")
    info = deployment.store.get(cert.serial_number)
    if (info is None or info.der != der or info.status is not CertStatus.valid
            or info.profile not in source.config.client_cert_profiles):
        raise HookRefused(Refusal.UNAUTHENTICATED, "client certificate is not a valid ikepki certificate")


def create_app(resp: Response) -> FastAPI:
    dep = resp.dep
    app = FastAPI(title="ikepki alert hooks", version="1", openapi_url=f"{PREFIX}/openapi.json", docs_url=None,
                  redoc_url=None)
    limit = resp.settings.max_body_bytes

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Paths and methods the app has no route for (404, 405) answer problem documents too."""
        if exc.status_code == 404:
            return problem(Refusal.UNKNOWN_SOURCE, "no such hook source")
        return JSONResponse({"type": "about:blank", "title": "Method Not Allowed" if exc.status_code == 405
                             else "Error", "status": exc.status_code, "detail": str(exc.detail)}, exc.status_code,
                            headers=exc.headers, media_type="application/problem+json")
    resp.hooks.current()  # fail closed at start-up on a broken hooks file

    def parse(source: Source, request_headers: Mapping[str, str], body: bytes) -> tuple[list[Alert], str | None]:
        """The alerts, and the message id now remembered (Standard Webhooks' webhook-id, the digest
        of a Keylime ``msg``; None for Alertmanager, which repeats alerts by design)."""
        fmt = source.config.format
        if fmt == "alertmanager":
            return alertmanager.parse(source.name, body), None
        if fmt == "keylime":
            found = keylime.parse(source.name, body, source.verifier_key, source.config.allow_unsigned)
            msg_id = keylime.message_id(body)
            if not resp.store.remember_message(source.name, msg_id, dep.clock.now(),
                                               timedelta(days=keylime.REPLAY_KEEP_DAYS)):
                raise HookRefused(Refusal.REPLAY, "this Keylime message was already delivered")
            return found, msg_id
        tolerance = source.config.tolerance_seconds
        signed = generic.verify(request_headers, body, list(source.hmac_keys), dep.clock.now(), tolerance)
        alerts = generic.parse(source.name, body, signed, source.config.fingerprint_field)
        if not resp.store.remember_message(source.name, signed.msg_id, dep.clock.now(),
                                           timedelta(seconds=2 * tolerance + 60)):
            raise HookRefused(Refusal.REPLAY, f"webhook-id {signed.msg_id[:64]!r} was already delivered")
        return alerts, signed.msg_id

    def handle(name: str, headers: Mapping[str, str], scope: Mapping[str, Any], body: bytes, client: str
               ) -> dict[str, Any]:
        loaded = resp.hooks.current()
        source = loaded.sources.get(name)
        if source is None:
            raise HookRefused(Refusal.UNKNOWN_SOURCE, "no such hook source")
        check_bearer(source, headers.get("authorization"))
        check_client_cert(source, scope, dep)
        alerts, msg_id = parse(source, headers, body)
        results = []
        try:
            for alert in alerts:
                outcomes = resp.engine.handle(alert, loaded.hooks, client)
                results.append({"fingerprint": alert.fingerprint, "status": alert.status.value,
                                "rules": [o.wire() for o in outcomes]})
        except Exception:
            if msg_id is not None:  # not handled, whatever failed: let the sender's retry with the same id through
                with contextlib.suppress(PKIError):
                    resp.store.forget_message(name, msg_id)
            raise
        resp.audit("hook-accepted", f"hook:{name}", client, format=source.config.format, alerts=len(alerts),
                   fingerprints=[a.fingerprint for a in alerts][:50])
        return {"source": name, "alerts": results}

    @app.post(PREFIX + "/{name}")
    async def hook(name: str, request: Request) -> JSONResponse:
        client = client_ip(request.scope)
        if not re.match(NAME, name):
            name = "(invalid name)"  # never a configured source; keeps the audit line clean
        try:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise HookRefused(Refusal.UNSUPPORTED_MEDIA, "Content-Type must be application/json")
            body = await read_bounded(request, limit)
            headers = {k.lower(): v for k, v in request.headers.items()}
            result = await anyio.to_thread.run_sync(handle, name, headers, request.scope, body, client)
            return JSONResponse(result, 200)
        except HookRefused as exc:
            await anyio.to_thread.run_sync(_audit_refusal, resp, name, exc, client)
            challenge = {"WWW-Authenticate": 'Bearer realm="ikepki-hooks"'} \
                if exc.refusal is Refusal.UNAUTHENTICATED else None
            return problem(exc.refusal, exc.detail, challenge)
        except PKIError as exc:
            log.error("hook %s: %s", name[:64], exc.detail)
            if exc.kind is ErrorKind.UNAVAILABLE:
                return problem(Refusal.UNAVAILABLE, exc.detail, {"Retry-After": "5"})
            raise

    return app


def _audit_refusal(resp: Response, name: str, exc: HookRefused, client: str) -> None:
    with contextlib.suppress(PKIError):  # already logged; the refusal stands
        resp.audit("hook-refused", f"hook:{name[:64]}", client, refusal=exc.refusal.value[1], detail=exc.detail)


def http_mounts(deployment: ServiceKeys) -> list[HttpMount]:
    """Entry point ``ikepki.http: hooks`` (``/admin/v1/incidents`` is contributed to the admin
    surface through ``ikepki.admin_routes: incidents``)."""
    return [HttpMount(PREFIX, create_app(Response(deployment)), frozenset({HTTPS}))]
