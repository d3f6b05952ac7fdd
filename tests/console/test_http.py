"""The console over plain HTTPS (httpx against a real ``ikepki serve``): sign-in edge cases, the
session ending with its token, audit of refused calls, body bounds, hold release, and security
headers on every answer."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.console.conftest import http_client

pytestmark = pytest.mark.slow


def sign_in(http: httpx.Client, token: str, next_path: str = "") -> httpx.Response:
    page = http.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    return http.post("/console/login", data={"csrf": csrf.group(1), "token": token, "next": next_path})


def csrf_of(http: httpx.Client) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', http.get("/console/").text)
    assert m
    return m.group(1)


def audit(incident: Any, **match: Any) -> list[dict[str, Any]]:
    rows = incident.deployment.store.audit_events(channel="console", limit=1000)
    return [r for r in rows if all(r.get(k) == v or r["detail"].get(k) == v for k, v in match.items())]


def test_sign_in_failures_and_open_redirects(incident, tokens):  # type: ignore[no-untyped-def]
    with http_client(incident) as http:
        assert http.post("/console/login", data={"token": tokens["viewer"]}).status_code == 403  # no CSRF
        bad = sign_in(http, "not-a-token-" + secrets.token_hex(8))
        assert bad.status_code == 401 and "unknown or disabled" in bad.text
        assert "not-a-token" not in bad.text  # the typed token is not echoed
        ok = sign_in(http, tokens["viewer"], "//evil.example/console/")
        assert ok.status_code == 303 and ok.headers["location"] == "/console/"
    with http_client(incident) as http:
        ok = sign_in(http, tokens["viewer"], "/console/audit?actor=x")
        assert ok.status_code == 303 and ok.headers["location"] == "/console/audit?actor=x"
    assert audit(incident, action="console-login-failed")
    assert audit(incident, action="console", path="/console/login", status=401)


def test_session_ends_when_its_token_is_disabled(incident):  # type: ignore[no-untyped-def]
    name = f"console-disable-{secrets.token_hex(3)}"
    token = secrets.token_urlsafe(32)
    incident.deployment.store.add_admin_token(name, "revoker", token, incident.deployment.clock.now())
    with http_client(incident) as http:
        assert sign_in(http, token).status_code == 303
        assert http.get("/console/revoke").status_code == 200
        incident.deployment.store.disable_admin_token(name)
        resp = http.get("/console/revoke")
        assert resp.status_code == 303 and resp.headers["location"].startswith("/console/login")
        assert http.post("/console/logout", data={"csrf": "x"}).status_code == 401
    assert [r for r in audit(incident, action="console-login") if r["actor"] == name]


def test_unauthenticated_and_oversized_posts_are_refused_and_audited(incident, tokens):  # type: ignore[no-untyped-def]
    with http_client(incident) as http:
        resp = http.post("/console/revoke/execute", data={"serials": "1"})
        assert resp.status_code == 401
        for key, value in {"content-security-policy": "default-src 'none'", "x-frame-options": "DENY",
                           "cache-control": "no-store"}.items():
            assert value in resp.headers[key]
        assert sign_in(http, tokens["revoker"]).status_code == 303
        huge = http.post("/console/revoke/preview", content=b"serials=" + b"a" * 300_000,
                         headers={"content-type": "application/x-www-form-urlencoded"})
        assert huge.status_code == 413
        wrong_type = http.post("/console/revoke/preview", content=b'{"serials": "a"}',
                               headers={"content-type": "application/json"})
        assert wrong_type.status_code == 400
    assert audit(incident, action="console", path="/console/revoke/execute", status=401, actor="anonymous")
    assert audit(incident, action="console", path="/console/revoke/preview", status=413)


def test_hold_and_release_through_the_console(incident, tokens):  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    _, _, serial = incident.issue("user", x509.RFC822Name(f"hold-{tag}@example.test"), f"hold-{tag}")
    with http_client(incident) as http:
        assert sign_in(http, tokens["revoker"]).status_code == 303
        csrf = csrf_of(http)
        form = {"csrf": csrf, "serials": serial, "action": "hold", "reason": ""}
        preview = http.post("/console/revoke/preview", data=form)
        assert preview.status_code == 200
        plan = re.search(r'name="plan" value="([^"]+)"', preview.text)
        assert plan
        done = http.post("/console/revoke/execute", data={**form, "plan": plan.group(1), "confirm_count": "1"})
        assert done.status_code == 303
        assert incident.cert_status(serial) == "hold"
        detail = http.get(f"/console/certificates/{serial}")
        assert 'id="release"' in detail.text
        assert http.post(f"/console/certificates/{serial}/release", data={"csrf": "nope"}).status_code == 403
        assert incident.cert_status(serial) == "hold"
        released = http.post(f"/console/certificates/{serial}/release", data={"csrf": csrf})
        assert released.status_code == 303
    assert incident.cert_status(serial) == "valid"
    actions = [r["action"] for r in incident.deployment.store.audit_events(serial=int(serial, 16))]
    assert "unhold" in actions
