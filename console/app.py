"""``/console`` (HTTPS only): the web console, server-rendered.

Sign-in exchanges an admin token (the admin API's authenticator and roles: viewer < revoker <
admin) for a server-side session (:mod:`console.sessions`) carried in a ``__Host-`` cookie
(HttpOnly, Secure, SameSite=Strict; RFC 6265bis §4.1.3.2). Every POST carries the session's CSRF
token (the sign-in form a double-submit one). The admin API's :class:`~ca.service.admin.AdminGate`
wraps the app: bounded bodies and one audit record per request (the person, role, method, path,
status), refused ones included; revocations are audited by the Authority with channel
``console``. Every response carries a strict Content-Security-Policy (no inline script or style),
``X-Frame-Options: DENY`` and ``Cache-Control: no-store``. Templates autoescape every value:
certificate fields are attacker-controlled.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import statistics
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from functools import cached_property
from importlib import resources
from importlib.metadata import entry_points
from typing import Annotated, Any, Protocol
from urllib.parse import quote, urlencode

import anyio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.exceptions import HTTPException

from ca.audit import verify as verify_audit_chain
from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertificateQuery, CertStatus, Requester, parse_serial
from ca.oids import POSTURE_COMPLIANT, POSTURE_QUARANTINE
from ca.ports import ConsoleServices, OidcClient, OidcSignIn, ServiceKeys, oidc_sign_in
from ca.posture import DevicePosture, PostureSummary, device_posture
from ca.revocation import (
    LiveSessionProbe,
    execute,
    live_sas,
    live_session_probe,
    parse_reason,
    select_targets,
    would_change,
)
from ca.service.admin import CALL_STATE, ROLES, STATUS, AdminAuthenticator, AdminGate, Principal
from ca.service.mounts import HTTPS, ASGIApp, HttpMount, Message, Receive, Scope, Send
from console.charts import bar_chart, buckets, top_counts
from console.forms import RevokeForm, parse_form, parse_serial_list
from console.oidc import code_challenge, console_role, person_name
from console.sessions import ConsoleSession, SqlLoginStore, SqlSessionStore
from console.settings import ConsoleSettings

log = logging.getLogger("ikepki.console")

PREFIX = "/console"
CHANNEL = "console"
COOKIE = "__Host-ikepki-console"
LOGIN_COOKIE = "__Host-ikepki-login"
OIDC_COOKIE = "__Host-ikepki-oidc"  # binds a sign-in at the identity provider to this browser
INCIDENTS_GROUP = "ikepki.console_incidents"
MAX_RESULT_SERIALS = 200  # serials a result page follows (they travel in its URL)
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"strict-transport-security", b"max-age=31536000")]


class NotSignedIn(Exception):
    pass


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":")


def _key_text(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def plan_digest(targets: Iterable[CertificateInfo], form: RevokeForm) -> str:
    """What a preview showed: the selected serials, their states and the action. The execution
    re-selects and refuses if this changed in between."""
    h = hashlib.sha256(f"{form.hold}|{form.reason}|{form.block_device}".encode())
    for t in sorted(targets, key=lambda i: i.serial):
        h.update(f"|{t.serial_hex}:{t.status.value}".encode())
    return h.hexdigest()


class Console:
    """Per-deployment wiring: settings, sessions, the admin authenticator and the templates."""

    def __init__(self, dep: ConsoleServices, probe: Callable[[], LiveSessionProbe] | None = None) -> None:
        self.dep = dep
        self.settings: ConsoleSettings = dep.settings_for(ConsoleSettings, "console")
        self.sessions = SqlSessionStore(dep.db, timedelta(seconds=self.settings.idle_timeout_seconds),
                                        timedelta(seconds=self.settings.max_session_seconds))
        self.auth = AdminAuthenticator(dep.store, dep.clock, {})
        self.probe = probe or (lambda: live_session_probe([dep.root]))
        self.env = Environment(loader=PackageLoader("console", "templates"), autoescape=True,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["ts"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S UTC") if d else ""
        self.env.filters["q"] = lambda s: quote(str(s), safe="")

    @cached_property
    def logins(self) -> SqlLoginStore:
        ttl = self.settings.oidc.login_ttl_seconds if self.settings.oidc else 600
        return SqlLoginStore(self.dep.db, timedelta(seconds=ttl))

    @cached_property
    def oidc(self) -> OidcSignIn | None:
        """The identity provider sign-in port, when ``console.oidc`` is configured."""
        if self.settings.oidc is None:
            return None
        found = oidc_sign_in(self.dep)
        if found is None:
            log.warning("console.oidc is configured but no package provides ikepki.oidc_signin")
        return found

    @cached_property
    def posture(self) -> DevicePosture | None:
        """The device-posture port (``ikepki.posture``), when a package provides it."""
        try:
            return device_posture(self.dep)
        except Exception as exc:  # optional: the certificate page still renders
            log.warning("device posture: %s", exc)
            return None

    def posture_of(self, device_id: str | None) -> PostureSummary | None:
        """The device's latest verdict, None without a device, a posture package or a verdict."""
        if not device_id or self.posture is None:
            return None
        try:
            return self.posture.latest(device_id)
        except Exception as exc:  # e.g. the posture tables are not migrated: show the rest
            log.warning("device posture of %s: %s", device_id[:80], exc)
            return None

    @cached_property
    def incident_panels(self) -> dict[str, IncidentPanel]:
        return load_incident_panels(self.dep)

    def now(self) -> datetime:
        return self.dep.clock.now()  # type: ignore[no-any-return]

    def audit(self, actor: str, action: str, source: str, **fields: Any) -> None:
        now = self.now()
        self.dep.store.add_audit(now, actor[:255], action, CHANNEL, source[:255], **fields)
        self.dep.audit.append(now, actor, action, CHANNEL, source=source, **fields)

    def token_live(self, s: ConsoleSession) -> bool:
        """The admin token a session came from is still enabled with the same role."""
        if s.method == "oidc":
            return self.settings.oidc is not None  # sign-in through the provider switched off: ends
        if s.method != "token":
            return True
        return any(t["name"] == s.name and t["role"] == s.role and not t["disabled"]
                   for t in self.dep.store.admin_tokens())

    def page(self, request: Request, template: str, status: int = 200, me: Principal | None = None,
             session: ConsoleSession | None = None, headers: Mapping[str, str] | None = None,
             **ctx: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(
            me=me, csrf=session.csrf if session else "", can_revoke=bool(me and me.can("revoker")),
            oidc_provider=self.settings.oidc.provider if self.settings.oidc else None,
            prefix=PREFIX, path=request.url.path, **ctx)
        return HTMLResponse(body, status, headers=dict(headers) if headers else None)


# -- the pieces every route shares -------------------------------------------------------------

def signed_in(request: Request) -> tuple[Principal, ConsoleSession]:
    """FastAPI dependency: the person behind the session cookie (NotSignedIn otherwise)."""
    con: Console = request.app.state.console
    cookie = request.cookies.get(COOKIE)
    s = con.sessions.get(cookie, con.now())
    if s is None:
        raise NotSignedIn
    if not con.token_live(s):
        con.sessions.delete(cookie or "")
        raise NotSignedIn
    p = Principal(s.name, s.role, f"console-{s.method}", _client(request))
    request.scope.setdefault(CALL_STATE, {})["principal"] = p
    request.scope["ikepki.console.session"] = s  # error pages keep the sign-out form working
    return p, s


Person = Annotated[tuple[Principal, ConsoleSession], Depends(signed_in)]


async def form_body(request: Request) -> dict[str, str]:
    """FastAPI dependency: the posted form, bounded (the gate bounds the body as a whole)."""
    return parse_form(await request.body(), request.headers.get("content-type"))


Form = Annotated[dict[str, str], Depends(form_body)]


def check_post(request: Request, form: Mapping[str, str], expected: str) -> None:
    """CSRF: the form's token must equal the session's; a cross-site fetch is refused even with it."""
    site = request.headers.get("sec-fetch-site")
    if site not in (None, "same-origin", "none"):
        raise PKIError(ErrorKind.FORBIDDEN, "cross-site form posts are refused")
    if not expected or not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        raise PKIError(ErrorKind.FORBIDDEN, "missing or wrong CSRF token: reload the page and try again")


def need(p: Principal, role: str) -> None:
    if not p.can(role):
        raise PKIError(ErrorKind.FORBIDDEN, f"role {p.role} may not do this (needs {role})")


def _cookie(name: str, value: str, max_age: int | None = None, same_site: str = "Strict") -> str:
    parts = [f"{name}={value}", "Path=/", "Secure", "HttpOnly", f"SameSite={same_site}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def _redirect(url: str, *cookies: str) -> RedirectResponse:
    resp = RedirectResponse(url, 303)
    for c in cookies:
        resp.headers.append("set-cookie", c)
    return resp


# -- the app -----------------------------------------------------------------------------------

def create_app(dep: ConsoleServices, probe: Callable[[], LiveSessionProbe] | None = None) -> ASGIApp:
    con = Console(dep, probe)
    app = FastAPI(title="ikepki console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = con
    _handlers(app, con)
    _session_routes(app, con)
    _oidc_routes(app, con)
    _read_routes(app, con)
    _revoke_routes(app, con)
    gate = AdminGate(app, dep.store, dep.audit, dep.clock, con.settings.max_body_bytes,
                     action="console", channel=CHANNEL)
    return SecurityHeaders(gate)


class SecurityHeaders:
    """Adds the CSP and framing/caching headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                static = str(scope.get("path", "")).startswith(f"{PREFIX}/static/")
                headers += [*SECURITY_HEADERS, (b"cache-control", b"max-age=300" if static else b"no-store")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _handlers(app: FastAPI, con: Console) -> None:
    def error_page(request: Request, status: int, detail: str, headers: Mapping[str, str] | None = None
                   ) -> HTMLResponse:
        p = (request.scope.get(CALL_STATE) or {}).get("principal")
        return con.page(request, "error.html", status, me=p, session=request.scope.get("ikepki.console.session"),
                        code=status, detail=detail, headers=headers)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, _exc: NotSignedIn) -> Response:
        if request.method in ("GET", "HEAD"):
            return _redirect(f"{PREFIX}/login?" + urlencode({"next": request.url.path[:300]}))
        return error_page(request, 401, "not signed in (or the session expired): sign in again")

    @app.exception_handler(PKIError)
    async def pki_error(request: Request, exc: PKIError) -> HTMLResponse:
        status = STATUS.get(exc.kind, 500)
        detail = exc.detail if status < 500 or exc.kind is ErrorKind.UNAVAILABLE else "internal error"
        return error_page(request, status, detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error_page(request, 422, f"invalid {where}: {first.get('msg', 'invalid request')}"[:300])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> HTMLResponse:
        return error_page(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> HTMLResponse:
        log.error("console: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return error_page(request, 500, "internal error")


def _session_routes(app: FastAPI, con: Console) -> None:
    @app.get(PREFIX)
    def root() -> RedirectResponse:
        return _redirect(f"{PREFIX}/")

    @app.get(f"{PREFIX}/static/{{name}}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        body = resources.files("console").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name])

    @app.get(f"{PREFIX}/login")
    def login_form(request: Request, next: Annotated[str, Query(max_length=300)] = "") -> HTMLResponse:
        token = secrets.token_urlsafe(32)
        return con.page(request, "login.html", login_csrf=token, next=_safe_next(next), failed=False,
                        headers={"set-cookie": _cookie(LOGIN_COOKIE, token, 600)})

    @app.post(f"{PREFIX}/login")
    def login(request: Request, form: Form) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
            raise PKIError(ErrorKind.FORBIDDEN, "missing or wrong sign-in CSRF token: reload the sign-in page")
        token = form.get("token", "").strip()
        p = con.auth.authenticate(f"Bearer {token}", {}, _client(request)) if token else None
        if p is None:
            con.audit("anonymous", "console-login-failed", _client(request))
            fresh = secrets.token_urlsafe(32)
            return con.page(request, "login.html", 401, login_csrf=fresh, next=_safe_next(form.get("next", "")),
                            failed=True, headers={"set-cookie": _cookie(LOGIN_COOKIE, fresh, 600)})
        request.scope.setdefault(CALL_STATE, {})["principal"] = p
        cookie, _ = con.sessions.create(p.name, p.role, "token", _client(request), con.now())
        con.audit(p.name, "console-login", _client(request), role=p.role, auth="token")
        return _redirect(_safe_next(form.get("next", "")) or f"{PREFIX}/", _cookie(COOKIE, cookie),
                         _cookie(LOGIN_COOKIE, "", 0))

    @app.post(f"{PREFIX}/logout")
    def logout(request: Request, person: Person, form: Form) -> RedirectResponse:
        p, s = person
        check_post(request, form, s.csrf)
        con.sessions.delete(request.cookies.get(COOKIE, ""))
        con.audit(p.name, "console-logout", p.source, role=p.role)
        return _redirect(f"{PREFIX}/login", _cookie(COOKIE, "", 0))


def _oidc_routes(app: FastAPI, con: Console) -> None:
    """Sign-in through the identity provider: OpenID Connect Core 1.0 §3.1 (authorization code
    flow) with PKCE (RFC 7636, S256). ``state``, ``nonce`` and the code verifier are created per
    sign-in and kept server-side under the SHA-256 of a pre-login cookie (``SameSite=Lax``: the
    provider's redirect back is a cross-site top-level GET), used once. The console role comes from
    the person's IdP groups (``console.oidc.group_roles``); no mapped group: refused and audited."""

    def client(request: Request) -> OidcClient:
        cfg = con.settings.oidc
        assert cfg is not None
        secret = None
        if cfg.client_secret_file:
            try:
                secret = con.dep.path(cfg.client_secret_file).read_text().strip()
            except OSError as exc:
                log.error("console.oidc.client_secret_file: %s", exc)
                raise PKIError(ErrorKind.UNAVAILABLE, "the console's identity provider client secret is "
                                                      "unreadable (see the server log)") from None
        redirect = cfg.redirect_uri or f"https://{request.url.netloc}{PREFIX}/oidc/callback"
        return OidcClient(cfg.provider, cfg.client_id, secret, redirect)

    def port() -> OidcSignIn:
        if con.oidc is None:
            raise PKIError(ErrorKind.NOT_FOUND, "sign-in through an identity provider is not configured")
        return con.oidc

    def refused(request: Request, status: int, detail: str, actor: str = "anonymous",
                fields: Mapping[str, Any] | None = None) -> HTMLResponse:
        con.audit(actor, "console-login-failed", _client(request), auth="oidc", reason=detail[:200], **(fields or {}))
        return con.page(request, "error.html", status, code=status, detail=detail,
                        headers={"set-cookie": _cookie(OIDC_COOKIE, "", 0, "Lax")})

    # plain (sync) routes: FastAPI runs them in its thread pool (database, HTTP to the provider)
    @app.get(f"{PREFIX}/login/oidc")
    def oidc_start(request: Request, next: Annotated[str, Query(max_length=300)] = "") -> RedirectResponse:
        signin = port()
        cfg = con.settings.oidc
        assert cfg is not None
        cookie, login = con.logins.begin(cfg.provider, _safe_next(next), con.now())
        url = signin.authorization_url(client(request), login.state, login.nonce, code_challenge(login.code_verifier))
        return _redirect(url, _cookie(OIDC_COOKIE, cookie, cfg.login_ttl_seconds, "Lax"))

    @app.get(f"{PREFIX}/oidc/callback")
    def oidc_callback(request: Request, code: Annotated[str, Query(max_length=2048)] = "",
                      state: Annotated[str, Query(max_length=256)] = "",
                      error: Annotated[str, Query(max_length=256)] = "") -> Response:
        """The provider's redirect back (Core §3.1.2.5 / §3.1.2.6)."""
        signin = port()
        cfg = con.settings.oidc
        assert cfg is not None
        login = con.logins.take(request.cookies.get(OIDC_COOKIE), con.now())
        if login is None:
            return refused(request, 400, "this sign-in was not started in this browser or has expired: sign in again")
        if not state or not hmac.compare_digest(state.encode(), login.state.encode()):
            return refused(request, 400, "the sign-in state does not match this browser's: sign in again")
        if error:
            return refused(request, 401, f"the identity provider refused the sign-in: {error[:64]}")
        try:
            person = signin.redeem(client(request), code, login.code_verifier, login.nonce)
        except PKIError as exc:
            status = 503 if exc.kind is ErrorKind.UNAVAILABLE else 401
            return refused(request, status, f"sign-in failed: {exc.detail}"[:300])
        name = person_name(person)
        fields = {"provider": login.provider, "email": person.email, "groups": list(person.groups)[:50]}
        if name is None:
            return refused(request, 403, "the identity provider's issuer and subject are too long for an actor name",
                           fields=fields)
        role = console_role(cfg.group_roles, person.groups)
        if role is None:
            return refused(request, 403, "none of your identity provider groups grants access to the console",
                           actor=name, fields=fields)
        request.scope.setdefault(CALL_STATE, {})["principal"] = Principal(name, role, "console-oidc",
                                                                          _client(request))
        session_id, _ = con.sessions.create(name, role, "oidc", _client(request), con.now(),
                                            timedelta(seconds=cfg.session_max_seconds))
        con.audit(name, "console-login", _client(request), role=role, auth="oidc", **fields)
        # the provider's redirect was a cross-site navigation: a SameSite=Strict cookie set now is
        # sent only from the next same-site navigation, so this page continues with one
        target = login.next_path or f"{PREFIX}/"
        page = con.page(request, "signed_in.html", target=target)
        page.headers.append("set-cookie", _cookie(COOKIE, session_id))
        page.headers.append("set-cookie", _cookie(OIDC_COOKIE, "", 0, "Lax"))
        return page


def _safe_next(value: str) -> str:
    """Only a path inside the console (no scheme, host or protocol-relative URL)."""
    if value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value and \
            all(c.isprintable() for c in value):
        return value[:300]
    return ""


# -- read-only pages ---------------------------------------------------------------------------

def _read_routes(app: FastAPI, con: Console) -> None:
    dep = con.dep

    @app.get(f"{PREFIX}/")
    def overview(request: Request, person: Person) -> HTMLResponse:
        p, s = person
        now = con.now()
        hour = now.replace(minute=0, second=0, microsecond=0)
        start = hour - timedelta(hours=23)
        issued = dep.store.issued_times(start, now + timedelta(seconds=1))
        revoked = dep.store.revoked_times(start, now + timedelta(seconds=1))
        labels = [(start + timedelta(hours=i)).strftime("%H") for i in range(24)]
        activity = bar_chart(labels, [("issued", buckets((t for t, _ in issued), start, timedelta(hours=1), 24)),
                                      ("revoked", buckets((t for t, _ in revoked), start, timedelta(hours=1), 24))],
                             label_every=3)
        day0 = now.replace(hour=0, minute=0, second=0, microsecond=0)
        expiring = dep.store.expiry_times(now, day0 + timedelta(days=7))
        expiry = bar_chart([(day0 + timedelta(days=i)).strftime("%a %d") for i in range(7)],
                           [("expiring", buckets(expiring, day0, timedelta(days=1), 7))], width=420)
        week = dep.store.issued_times(now - timedelta(days=7), now + timedelta(seconds=1))
        protocols = top_counts(c for _, c in week)
        rows = _with_live_sas(con, _gateway_rows(dep))
        return con.page(request, "overview.html", me=p, session=s, activity=activity, expiry=expiry,
                        protocols=protocols, protocol_max=max((n for _, n in protocols), default=0), rows=rows,
                        live_total=sum(r["live_sas"] or 0 for r in rows), issued_24h=len(issued),
                        revoked_24h=len(revoked), expiring_7d=len(expiring), total=dep.store.count(), now=now)

    @app.get(f"{PREFIX}/certificates")
    def certificates(request: Request, person: Person,
                     serial: Annotated[str, Query(max_length=64)] = "",
                     identity: Annotated[str, Query(max_length=255)] = "",
                     subject: Annotated[str, Query(max_length=255)] = "",
                     device: Annotated[str, Query(max_length=255)] = "",
                     user: Annotated[str, Query(max_length=255)] = "",
                     profile: Annotated[str, Query(max_length=32)] = "",
                     status: Annotated[str, Query(pattern="^(|valid|revoked|hold)$")] = "",
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> HTMLResponse:
        p, s = person
        q = CertificateQuery(serial=parse_serial(serial) if serial.strip() else None,
                             subject_contains=subject.strip() or None, san=identity.strip() or None,
                             profile=profile.strip() or None, status=CertStatus(status) if status else None,
                             user=user.strip() or None, limit=limit)
        device = device.strip()
        if device.startswith("ek:"):
            q = CertificateQuery(**{**q.__dict__, "ek_fingerprint": device[3:]})
        elif device:
            q = CertificateQuery(**{**q.__dict__, "device_id": device})
        items = dep.store.search(q)
        return con.page(request, "certificates.html", me=p, session=s, items=items, limit=limit,
                        users=dep.store.users([i.serial for i in items]),
                        form={"serial": serial, "identity": identity, "subject": subject, "device": device,
                              "user": user, "profile": profile, "status": status}, profiles=sorted(dep.profiles))

    @app.get(f"{PREFIX}/certificates/{{serial}}")
    def certificate(request: Request, person: Person, serial: str) -> HTMLResponse:
        p, s = person
        info = dep.store.get(parse_serial(serial[:64]))
        if info is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial {serial[:64]}")
        cert = info.certificate()
        chain: list[tuple[str, str]] = [(cert.subject.rfc4514_string(), _fingerprint(cert))]
        issuer = dep.issuers.get(info.issuer_id)
        if issuer is not None:
            chain.append((issuer.certificate.subject.rfc4514_string(), _fingerprint(issuer.certificate)))
        chain.append((dep.root.subject.rfc4514_string(), _fingerprint(dep.root)))
        extensions = [(e.oid._name if e.oid._name != "Unknown OID" else e.oid.dotted_string, e.critical)
                      for e in cert.extensions]
        device = dep.store.device(info.device_id) if info.device_id else None
        history = dep.store.audit_events(serial=info.serial, limit=100)
        return con.page(request, "certificate.html", me=p, session=s, info=info, cert=cert, chain=chain,
                        user=dep.store.users([info.serial]).get(info.serial),
                        posture=con.posture_of(info.device_id), posture_mark=_posture_mark(cert),
                        key=_key_text(cert), extensions=extensions, device=device, history=history,
                        fingerprint=_fingerprint(cert), issuer=cert.issuer.rfc4514_string(),
                        subject=cert.subject.rfc4514_string())

    @app.get(f"{PREFIX}/devices")
    def devices(request: Request, person: Person, q: Annotated[str, Query(max_length=255)] = "",
                blocked: Annotated[str, Query(pattern="^(|yes|no)$")] = "") -> HTMLResponse:
        p, s = person
        rows = dep.store.devices(q.strip() or None, {"yes": True, "no": False}.get(blocked), limit=200)
        return con.page(request, "devices.html", me=p, session=s, rows=rows, q=q, blocked=blocked)

    @app.get(f"{PREFIX}/device")
    def device(request: Request, person: Person, id: Annotated[str, Query(min_length=1, max_length=255)]
               ) -> HTMLResponse:
        p, s = person
        row = dep.store.device(id)
        if row is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no device {id[:80]!r}")
        certs = dep.store.search(CertificateQuery(device_id=id, limit=50))
        if row.get("ek_fingerprint"):
            seen = {c.serial for c in certs}
            certs += [c for c in dep.store.search(CertificateQuery(ek_fingerprint=row["ek_fingerprint"], limit=50))
                      if c.serial not in seen]
        return con.page(request, "device.html", me=p, session=s, row=row, certs=certs)

    @app.get(f"{PREFIX}/gateways")
    def gateways(request: Request, person: Person) -> HTMLResponse:
        p, s = person
        return con.page(request, "gateways.html", me=p, session=s, rows=_with_live_sas(con, _gateway_rows(dep)))

    @app.get(f"{PREFIX}/audit")
    async def audit(request: Request, person: Person, actor: Annotated[str, Query(max_length=255)] = "",
                    action: Annotated[str, Query(max_length=64)] = "",
                    channel: Annotated[str, Query(max_length=32)] = "",
                    serial: Annotated[str, Query(max_length=64)] = "",
                    before: Annotated[int | None, Query(ge=1)] = None) -> HTMLResponse:
        p, s = person
        serial_int = parse_serial(serial) if serial.strip() else None
        rows = await anyio.to_thread.run_sync(lambda: dep.store.audit_events(
            actor.strip() or None, action.strip() or None, serial_int, channel.strip() or None, before, 100))
        path = dep.audit.path
        check = await anyio.to_thread.run_sync(verify_audit_chain, path) if path and path.exists() else None
        older = f"{PREFIX}/audit?" + urlencode({"actor": actor, "action": action, "channel": channel,
                                                "serial": serial, "before": rows[-1]["id"]}) if len(rows) == 100 \
            else None
        return con.page(request, "audit.html", me=p, session=s, rows=rows, check=check,
                        form={"actor": actor, "action": action, "channel": channel, "serial": serial}, older=older)

    @app.get(f"{PREFIX}/incidents")
    def incidents(request: Request, person: Person) -> HTMLResponse:
        p, s = person
        return con.page(request, "incidents.html", me=p, session=s, panels=_incident_panels(con))

    @app.get(f"{PREFIX}/revocations")
    def revocation_result(request: Request, person: Person,
                          serials: Annotated[str, Query(max_length=MAX_RESULT_SERIALS * 42)] = "",
                          blocked: Annotated[str, Query(max_length=2048)] = "") -> HTMLResponse:
        """Per-gateway delivery of a revocation's push events, as they arrive (reloads while pending)."""
        p, s = person
        wanted = list(parse_serial_list(serials))[:MAX_RESULT_SERIALS]
        infos = dep.store.get_many(wanted)
        rows = dep.store.deliveries(wanted) if wanted else []
        per_gateway: dict[str, dict[str, Any]] = {}
        for g in dep.store.gateways():
            if g["enabled"]:
                per_gateway[g["name"]] = {"delivered": 0, "pending": 0, "failed": 0, "error": None, "latency": None}
        latencies: dict[str, list[float]] = {}
        for r in rows:
            g = per_gateway.setdefault(r["gateway"], {"delivered": 0, "pending": 0, "failed": 0, "error": None,
                                                      "latency": None})
            g[r["status"]] = g.get(r["status"], 0) + 1
            if r["last_error"]:
                g["error"] = r["last_error"]
            if r["delivered_at"] is not None:
                latencies.setdefault(r["gateway"], []).append((r["delivered_at"] - r["created_at"]).total_seconds())
        for name, values in latencies.items():
            per_gateway[name]["latency"] = statistics.median(values)
        pending = any(g["pending"] for g in per_gateway.values())
        return con.page(request, "result.html", me=p, session=s, infos=[infos[x] for x in wanted if x in infos],
                        per_gateway=per_gateway, pending=pending,
                        blocked=[b for b in blocked.split(",") if b][:50])


def _posture_mark(cert: x509.Certificate) -> str | None:
    """The posture verdict the certificate carries (its policy OID, ``ca.oids.POSTURE_*``)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        policies = {p.policy_identifier for p in ext}
    except x509.ExtensionNotFound:
        return None
    return "compliant" if POSTURE_COMPLIANT in policies else "quarantine" if POSTURE_QUARANTINE in policies else None


def _gateway_rows(dep: ConsoleServices) -> list[dict[str, Any]]:
    """Gateways with pending deliveries and, over their last 200 deliveries, failures and latency."""
    rows = dep.store.gateway_health()
    for row in rows:
        recent = dep.store.deliveries(gateway_id=row["id"], limit=200)
        done = [r for r in recent if r["delivered_at"] is not None]
        row["recent"] = len(recent)
        row["failed"] = sum(1 for r in recent if r["status"] == "failed" or r["last_error"])
        row["last_delivery"] = max((r["delivered_at"] for r in done), default=None)
        row["latency"] = statistics.median([(r["delivered_at"] - r["created_at"]).total_seconds() for r in done]) \
            if done else None
        row["healthy"] = row["enabled"] and row["pending"] == 0 and not row["last_error"]
    return rows


def _with_live_sas(con: Console, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds ``live_sas`` (IKE SAs the gateway reports now; None: it cannot tell) to each row."""
    enabled = [g for g in rows if g["enabled"]]
    try:
        sessions = con.probe().sessions(enabled, timeout=1.0) if enabled else {}
    except Exception as exc:  # best effort: the page still shows deliveries
        log.warning("live sessions: %s", exc)
        sessions = {}
    for row in rows:
        live = sessions.get(row["name"])
        row["live_sas"] = len(live.peers) if live is not None else None
    return rows


class IncidentPanel(Protocol):
    """What a package contributes under ``ikepki.console_incidents`` (``factory(deployment)``)."""

    def pending(self, limit: int = 100) -> list[dict[str, Any]]: ...

    def decide(self, incident_id: int, approve: bool, actor: str, channel: str, source: str = "",
               note: str | None = None) -> dict[str, Any]: ...


def load_incident_panels(dep: ServiceKeys) -> dict[str, IncidentPanel]:
    """The installed packages' incident panels by entry point name."""
    out: dict[str, IncidentPanel] = {}
    for ep in sorted(entry_points(group=INCIDENTS_GROUP), key=lambda e: e.name):
        try:
            out[ep.name] = ep.load()(dep)
        except ModuleNotFoundError:
            continue  # the package is not installed
        except Exception as exc:  # an optional panel must not take the console down
            log.warning("incident panel %s: %s", ep.name, exc)
    return out


def _incident_panels(con: Console) -> list[tuple[str, list[dict[str, Any]] | None, str | None]]:
    """(name, pending incidents or None, problem) per contributed panel."""
    out: list[tuple[str, list[dict[str, Any]] | None, str | None]] = []
    for name, panel in con.incident_panels.items():
        try:
            out.append((name, panel.pending(200), None))
        except PKIError as exc:
            out.append((name, None, exc.detail))
        except Exception as exc:
            log.warning("incident panel %s: %s", name, exc)
            out.append((name, None, "unavailable (see the server log)"))
    return out


# -- revoke / hold with a preview --------------------------------------------------------------

def _revoke_routes(app: FastAPI, con: Console) -> None:
    dep = con.dep

    def requester(p: Principal) -> Requester:
        return Requester(CHANNEL, p.name, p.source)

    @app.get(f"{PREFIX}/revoke")
    def revoke_form(request: Request, person: Person, serial: Annotated[str, Query(max_length=64)] = "",
                    device: Annotated[str, Query(max_length=255)] = "",
                    identity: Annotated[str, Query(max_length=255)] = "",
                    user: Annotated[str, Query(max_length=255)] = "") -> HTMLResponse:
        p, s = person
        need(p, "revoker")
        values = {"serials": serial, "device_id": device, "identity": identity, "user": user, "profile": "",
                  "subject_contains": "", "san_contains": "", "action": "revoke", "reason": "keyCompromise"}
        return con.page(request, "revoke.html", me=p, session=s, values=values, profiles=sorted(dep.profiles))

    def plan(form: RevokeForm) -> tuple[list[CertificateInfo], list[int]]:
        parse_reason(form.reason, form.hold)  # refuse a bad reason before selecting
        found = select_targets(dep.store, form.selector, con.settings.max_targets)
        return found.targets, found.not_found

    @app.post(f"{PREFIX}/revoke/preview")
    def preview(request: Request, person: Person, form: Form) -> HTMLResponse:
        """The dry run: exactly which certificates, which gateways hold a live SA of them."""
        p, s = person
        check_post(request, form, s.csrf)
        need(p, "revoker")
        rf = RevokeForm.parse(form)
        targets, not_found = plan(rf)
        enabled = [g for g in dep.store.gateways() if g["enabled"]]
        holders = live_sas(targets, enabled, con.probe()) if targets else {}
        changing = [t for t in targets if would_change(t, rf.hold)]
        devices = sorted({t.device_id or f"ek:{t.ek_fingerprint}" for t in targets
                          if t.device_id or t.ek_fingerprint}) if rf.block_device else []
        return con.page(request, "preview.html", me=p, session=s, form=rf, echo=rf.echo(), targets=targets,
                        users=dep.store.users([t.serial for t in targets]),
                        changing={t.serial for t in changing}, not_found=[format(x, "x") for x in not_found],
                        holders=holders, live_count=sum(len(v) for v in holders.values()),
                        gateways=[g["name"] for g in enabled], digest=plan_digest(targets, rf), devices=devices)

    @app.post(f"{PREFIX}/revoke/execute")
    def execute_revocation(request: Request, person: Person, form: Form) -> RedirectResponse:
        p, s = person
        check_post(request, form, s.csrf)
        need(p, "revoker")
        rf = RevokeForm.parse(form)
        targets, not_found = plan(rf)
        if not_found:
            raise PKIError(ErrorKind.NOT_FOUND, "no certificate with serial "
                                                f"{', '.join(format(x, 'x') for x in not_found[:20])}; nothing revoked")
        if not hmac.compare_digest(form.get("plan", "").encode(), plan_digest(targets, rf).encode()):
            raise PKIError(ErrorKind.CONFLICT, "the selection changed since the preview: nothing was revoked, "
                                               "preview again")
        if form.get("confirm_count", "").strip() != str(len(targets)):
            raise PKIError(ErrorKind.BAD_REQUEST, f"type the number of certificates ({len(targets)}) to confirm: "
                                                  "nothing was revoked")
        if not targets:
            raise PKIError(ErrorKind.BAD_REQUEST, "nothing selected")
        reason = parse_reason(rf.reason, rf.hold)
        done, blocked = execute(dep.authority, targets, reason, requester(p), rf.block_device)
        log.info("console: %s %s %d certificates (%d changed)", p.name, reason.name, len(targets), len(done))
        follow = [t.serial_hex for t in (done or targets)][:MAX_RESULT_SERIALS]
        return _redirect(f"{PREFIX}/revocations?" + urlencode({"serials": " ".join(follow),
                                                                "blocked": ",".join(blocked)}))

    @app.post(f"{PREFIX}/certificates/{{serial}}/release")
    def release_hold(request: Request, person: Person, form: Form, serial: str) -> RedirectResponse:
        """Release a certificateHold (RFC 5280 §5.3.1): the certificate is valid again."""
        p, s = person
        check_post(request, form, s.csrf)
        need(p, "revoker")
        info = dep.authority.release_hold(parse_serial(serial[:64]), requester(p))
        return _redirect(f"{PREFIX}/certificates/{info.serial_hex}")

    @app.post(f"{PREFIX}/incidents/{{panel}}/{{incident_id}}")
    def decide_incident(request: Request, person: Person, form: Form, panel: str, incident_id: int
                        ) -> RedirectResponse:
        """Approve (execute the parked plan now) or reject a pending incident."""
        p, s = person
        check_post(request, form, s.csrf)
        need(p, "revoker")
        contributed = con.incident_panels.get(panel)
        if contributed is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no incident panel {panel[:40]!r}")
        decision = form.get("decision")
        if decision not in ("approve", "reject"):
            raise PKIError(ErrorKind.BAD_REQUEST, "decision is approve or reject")
        contributed.decide(incident_id, decision == "approve", p.name, CHANNEL, p.source,
                           form.get("note", "").strip()[:512] or None)
        return _redirect(f"{PREFIX}/incidents")

    @app.post(f"{PREFIX}/device/block")
    def block_device(request: Request, person: Person, form: Form) -> RedirectResponse:
        p, s = person
        check_post(request, form, s.csrf)
        need(p, "revoker")
        device_id = form.get("device_id", "").strip()
        if not device_id or dep.store.device(device_id) is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no device {device_id[:80]!r}")
        blocked = form.get("blocked") == "yes"
        dep.authority.block_device(device_id, requester(p), form.get("reason", "").strip()[:255] or None, blocked)
        return _redirect(f"{PREFIX}/device?" + urlencode({"id": device_id}))


def http_mounts(deployment: ConsoleServices) -> list[HttpMount]:
    """Entry point ``ikepki.http: console`` (HTTPS listener only)."""
    settings: ConsoleSettings = deployment.settings_for(ConsoleSettings, "console")
    if not settings.enabled:
        return []
    if settings.oidc is not None:
        _check_oidc(deployment, settings)
    return [HttpMount(PREFIX, create_app(deployment), frozenset({HTTPS}))]


def _check_oidc(deployment: ConsoleServices, settings: ConsoleSettings) -> None:
    """At start-up, not at the first sign-in: ``console.oidc`` names an enabled provider of the
    ``oidc:`` section, and its client secret file (read again at every sign-in: rotation) is there."""
    assert settings.oidc is not None
    signin = oidc_sign_in(deployment)
    enabled = signin.providers() if signin is not None else []
    if settings.oidc.provider not in enabled:
        raise PKIError(ErrorKind.CONFIG, f"console.oidc.provider {settings.oidc.provider!r} is not an enabled "
                                         f"provider of the oidc: section (enabled: {', '.join(enabled) or 'none'})")
    if settings.oidc.client_secret_file and not deployment.path(settings.oidc.client_secret_file).is_file():
        raise PKIError(ErrorKind.CONFIG, f"console.oidc.client_secret_file {settings.oidc.client_secret_file!r} "
                                         "is not a readable file")


__all__ = ["ROLES", "create_app", "http_mounts"]
