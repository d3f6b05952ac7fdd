"""Console sign-in through the identity provider (the npm ``oidc-provider`` of tests/oidc, its
own HTML login and consent forms) in real Chromium and over plain HTTPS: the console role from the
person's IdP groups, a person in no mapped group refused and audited, an IdP viewer who cannot
revoke, state / nonce / PKCE bound to the browser that started the sign-in, and revoke by user
(the identity provider's user selector) with preview and typed-count confirmation."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gw_procs import Charon, Conn, free_udp_pair
from hypothesis import given, settings
from hypothesis import strategies as st
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ca.store.db import Database
from ca.store.sql import SqlCertificateStore
from tests.conftest import free_port, init_deployment_dir, start_server
from tests.console.conftest import Browser, chromium
from tests.console.test_http import sign_in
from tests.oidc.conftest import OidcRig
from tests.oidc.oidc_idp import Browser as IdpBrowser
from tests.oidc.oidc_idp import Idp, forms
from tests.oidc.test_gateway import policy_responder, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]
TEXT = st.characters(codec="utf-8")
SCREENSHOTS = os.environ.get("IKEPKI_CONSOLE_SCREENSHOTS")  # a directory: save README screenshots there

CONFIG = """
oidc:
  providers:
    corp:
      issuer: {issuer}
      client_ids: [ikepki-vpn]
      group_roles: {{vpn-staff: staff, vpn-contractors: contractors}}
console:
  oidc:
    provider: corp
    client_id: ikepki-console
    client_secret_file: console-oidc-secret.txt
    group_roles: {{pki-admins: admin, secops: revoker, pki-helpdesk: viewer}}
"""


@dataclass
class ConsoleIdp(OidcRig):
    """The OIDC rig with the console's client registered at the provider."""

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.https_url, verify=self.tls(), timeout=30, follow_redirects=False)

    def person(self, login: str) -> str:
        return f"oidc:{self.idp.issuer}#{login}"

    def audit(self, actor: str, action: str) -> list[dict[str, Any]]:
        """The deployment's audit table (the server's database, read here), newest first."""
        store = SqlCertificateStore(Database(f"sqlite:///{self.dir / 'ikepki.db'}"))
        return store.audit_events(actor=actor, action=action, limit=200)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleIdp]:
    port = free_port()
    directory = init_deployment_dir(tmp_path_factory.mktemp("console-oidc") / "ikepki",
                                    CONFIG.format(issuer=f"http://127.0.0.1:{port}"))
    secret = secrets.token_urlsafe(32)
    (directory / "console-oidc-secret.txt").write_text(secret + "\n")
    server = start_server(directory)
    try:
        idp = Idp(f"{server.https_url}/user/v1/backchannel-logout/corp", port, directory / "root-ca.pem",
                  console=(f"{server.https_url}/console/oidc/callback", secret))
    except BaseException:
        server.stop()
        raise
    yield ConsoleIdp(directory, server, idp)
    idp.stop()
    server.stop()


@pytest.fixture
def browser(rig: ConsoleIdp, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    with chromium(rig.server.https_port, tmp_path, request) as b:
        yield b


def idp_sign_in(b: Browser, rig: ConsoleIdp, login: str) -> None:
    """Click "Sign in with corp", then the provider's own login and consent forms, as a person would;
    returns on the console's overview (signed in) or its error page."""
    b.get("/console/login")
    b.click("#signin-oidc")
    submitted: set[str] = set()

    def step(d: Any) -> bool:
        url = d.current_url
        if url.startswith(rig.server.https_url):
            # the callback answers with a page that continues to the overview by itself (a
            # same-site navigation, so the SameSite=Strict session cookie goes with it)
            return bool(d.find_elements(By.ID, "error-status") or
                        ("/console/oidc/callback" not in url and d.find_elements(By.ID, "whoami")))
        if url in submitted or d.execute_script("return document.readyState") != "complete":
            return False
        fields = d.find_elements(By.CSS_SELECTOR, "input[name=login]")
        if fields:
            fields[0].send_keys(login)
            d.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys("any password")
        buttons = d.find_elements(By.CSS_SELECTOR, "button[type=submit]")
        if buttons:
            submitted.add(url)  # the login form, then the consent page's Continue
            buttons[0].click()
        return False

    WebDriverWait(b.driver, 60, 0.2, ignored_exceptions=(WebDriverException,)).until(step)


def test_admin_signs_in_through_the_identity_provider(rig, browser):  # type: ignore[no-untyped-def]
    b = browser
    idp_sign_in(b, rig, "erin")
    assert b.driver.current_url == f"{rig.server.https_url}/console/", b.page_text()
    assert b.text("#whoami") == f"{rig.person('erin')} (admin)"
    cookies = {c["name"]: c for c in b.driver.get_cookies()}
    session = cookies["__Host-ikepki-console"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert "__Host-ikepki-oidc" not in cookies  # the pre-login binding is gone
    assert b.find_all("#nav-revoke")  # an admin may revoke
    b.get("/console/revoke")
    assert b.find_all("#serials")
    logins = rig.audit(rig.person("erin"), "console-login")
    assert logins and logins[0]["detail"]["auth"] == "oidc" and logins[0]["detail"]["role"] == "admin"
    assert logins[0]["detail"]["email"] == "erin@example.test" and logins[0]["detail"]["provider"] == "corp"
    # every request of the session is audited with the person, exactly as the admin API does
    calls = rig.audit(rig.person("erin"), "console")
    assert any(c["detail"]["path"] == "/console/revoke" and c["detail"]["role"] == "admin" for c in calls), calls
    b.click("#logout")
    assert "/console/login" in b.driver.current_url


def test_signing_out_at_the_provider_ends_the_console_session(rig, browser):  # type: ignore[no-untyped-def]
    """Back-channel logout (the provider tells the VPN client's endpoint) ends the person's console
    sessions from that provider at once, not at the idle timeout; other people's stay."""
    b = browser
    idp_sign_in(b, rig, "erin")
    assert b.find_all("#whoami")
    other = rig.http()
    token = rig.ikepki("admin", "token", "--name", f"bcl-{secrets.token_hex(3)}", "--role", "viewer",
                       "--json").stdout
    token_value = json.loads(token)["token"]
    assert sign_in(other, token_value).status_code == 303
    assert "whoami" in other.get("/console/").text
    elsewhere = IdpBrowser()  # erin, on her laptop: the VPN client's device sign-in ...
    code = rig.idp.device_code()
    elsewhere.sign_in(code["verification_uri_complete"], "erin")
    assert "id_token" in rig.idp.token(code["device_code"])
    assert elsewhere.log_out(rig.idp.issuer).status_code == 200  # ... then she signs out at the provider

    def signed_out() -> bool:
        b.get("/console/")
        return not b.find_all("#whoami")

    assert wait_for(signed_out, 15), b.page_text()
    assert "/console/login" in b.driver.current_url
    assert "whoami" in other.get("/console/").text  # a token session of someone else is untouched


def test_person_in_no_mapped_group_is_refused_and_audited(rig, browser):  # type: ignore[no-untyped-def]
    b = browser
    idp_sign_in(b, rig, "dave")  # groups: everyone
    assert b.text("#error-status") == "403", b.page_text()
    assert "none of your identity provider groups" in b.text("#error-detail")
    assert not b.find_all("#whoami")
    assert "__Host-ikepki-console" not in b.cookies()
    b.get("/console/")
    assert "/console/login" in b.driver.current_url  # not signed in
    refused = rig.audit(rig.person("dave"), "console-login-failed")
    assert refused and refused[0]["detail"]["groups"] == ["everyone"]
    assert "none of your identity provider groups" in refused[0]["detail"]["reason"]
    assert not rig.audit(rig.person("dave"), "console-login")


def test_viewer_from_the_identity_provider_cannot_revoke(rig, browser):  # type: ignore[no-untyped-def]
    serial = enroll_user_certificate(rig, "alice")
    b = browser
    idp_sign_in(b, rig, "frank")  # pki-helpdesk -> viewer
    assert b.text("#whoami") == f"{rig.person('frank')} (viewer)"
    assert not b.find_all("#nav-revoke")
    b.get(f"/console/certificates/{serial}")
    assert rig.idp.issuer + "#alice" in b.text("#user")
    assert not b.find_all("#revoke-this") and not b.find_all("#revoke-user")
    b.get("/console/revoke")
    assert b.text("#error-status") == "403"
    b.get("/console/")
    csrf = b.find("form.who input[name=csrf]").get_attribute("value")
    b.submit_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/console/revoke/execute';"
        "for (const [k, v] of Object.entries(arguments[0])) { const i = document.createElement('input');"
        " i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();",
        {"csrf": csrf, "user": "alice", "action": "revoke", "reason": "keyCompromise", "confirm_count": "1",
         "plan": "x"})
    assert b.text("#error-status") == "403" and "needs revoker" in b.text("#error-detail")
    assert status_of(rig, serial) == "valid"
    refused = [r for r in rig.audit(rig.person("frank"), "console") if r["detail"]["status"] == 403]
    assert {r["detail"]["path"] for r in refused} >= {"/console/revoke", "/console/revoke/execute"}


def test_revoke_by_user_with_preview(rig, browser):  # type: ignore[no-untyped-def]
    """grace (secops and pki-helpdesk: the highest role wins, revoker) revokes every certificate of bob."""
    serials = {enroll_user_certificate(rig, "bob") for _ in range(2)}
    other = enroll_user_certificate(rig, "alice")
    b = browser
    idp_sign_in(b, rig, "grace")
    assert b.text("#whoami") == f"{rig.person('grace')} (revoker)"
    b.get("/console/certificates")
    b.find("input[name=user]").send_keys("bob@example.test")
    b.click("#search-go")
    listed = {r.find_element(By.CSS_SELECTOR, "td.mono").text for r in b.find_all("#results tbody tr")}
    assert serials <= listed and other not in listed
    assert all(r.find_element(By.CSS_SELECTOR, "td.user").text == "bob@example.test"
               for r in b.find_all("#results tbody tr"))
    b.get(f"/console/certificates/{sorted(serials)[0]}")
    b.click("#revoke-user")
    assert b.find("#user").get_attribute("value") == f"{rig.idp.issuer}#bob"
    b.click("#preview")
    targets = {r.find_element(By.CSS_SELECTOR, "td.mono").text for r in b.find_all("#targets tbody tr")}
    assert serials <= targets and other not in targets, b.page_text()
    count = b.text("#target-count")
    assert count == str(len(targets)) and b.text("#live-count") == "0"  # no gateway holds an SA of them
    assert all(status_of(rig, s) == "valid" for s in serials)  # the preview changed nothing
    if SCREENSHOTS:
        b.driver.save_screenshot(str(Path(SCREENSHOTS) / "console-revoke-user-preview.png"))
    b.find("#confirm_count").send_keys(count)
    b.click("#confirm")
    assert "/console/revocations" in b.driver.current_url, b.page_text()
    assert all(status_of(rig, s) == "revoked" for s in serials)
    assert status_of(rig, other) == "valid"
    rows = rig.audit(rig.person("grace"), "revoke")
    assert {r["serial"] for r in rows} >= serials and all(r["channel"] == "console" for r in rows)


def test_revoke_by_user_deletes_the_users_sa_at_the_bundled_responder(rig, browser, tmp_path, capsys):  # type: ignore[no-untyped-def]
    """bob's user certificate authenticates strongSwan to the bundled IKEv2 responder; a revoker
    signed in through the provider previews "every certificate of bob" (the preview names the
    responder holding his live SA) and confirms: the push deletes the SA."""
    with policy_responder(rig, tmp_path, "console-responder") as (responder, ike, name):
        bob, bob_key = enroll_user(rig, "bob")
        cp, cn = free_udp_pair()
        charon = Charon(tmp_path / "charon", cp, cn)
        charon.write_config([Conn("bob", "bob", "bob@example.test", remote_ts="10.231.0.0/16")], ike,
                            {"bob": (bob["certificate"].encode(), bob_key)},
                            {"root": (rig.dir / "root-ca.pem").read_bytes(), "issuing": bob["chain"].encode()})
        charon.start()
        try:
            _ok, log = charon.initiate("bob", "net")
            assert charon.sas_of("bob"), f"bob could not connect:\n{log}"

            def bob_up() -> bool:
                return any(sa["serial"] == bob["serial"] for sa in responder.sas())

            assert wait_for(bob_up, 5), responder.sas()
            b = browser
            idp_sign_in(b, rig, "grace")
            b.get(f"/console/revoke?user={rig.idp.issuer}%23bob")
            b.click("#preview")
            rows = {r.find_element(By.CSS_SELECTOR, "td.mono").text: r.find_element(By.CSS_SELECTOR, "td.live").text
                    for r in b.find_all("#targets tbody tr")}
            assert rows.get(bob["serial"]) == name, (rows, b.page_text())
            assert int(b.text("#live-count")) >= 1
            assert bob_up()  # the preview changed nothing
            b.find("#confirm_count").send_keys(b.text("#target-count"))
            started = time.monotonic()
            b.click("#confirm")
            assert wait_for(lambda: not bob_up(), 15), f"bob's SA still up: {responder.sas()}"
            with capsys.disabled():
                print(f"\n[console] revoke by IdP user confirmed -> responder SA deleted: "
                      f"{(time.monotonic() - started) * 1000:.0f} ms")
            assert status_of(rig, bob["serial"]) == "revoked"
        finally:
            charon.stop()


# -- the binding of a sign-in to its browser (plain HTTPS, the provider's forms over HTTP) -------

def follow_to_callback(rig: ConsoleIdp, http: httpx.Client, login: str) -> str:
    """From the console's redirect to the provider, through its forms, to the callback URL it
    sends the browser back to (not followed)."""
    resp = http.get("/console/login/oidc")
    assert resp.status_code == 303, resp.text
    for _ in range(20):
        location = resp.headers.get("location")
        if location:
            url = urljoin(str(resp.url), location)
            if url.startswith(f"{rig.server.https_url}/console/oidc/callback"):
                return url
            resp = http.get(url)
            continue
        assert resp.status_code == 200, resp.text
        form = forms(resp.text)[0]
        data = {**form["fields"], **({"login": login, "password": "x"} if "login" in form["fields"] else {})}
        resp = http.post(urljoin(str(resp.url), form["action"]), data=data)
    raise AssertionError("the provider never redirected back")


def test_state_nonce_and_pkce_bind_the_sign_in_to_its_browser(rig):  # type: ignore[no-untyped-def]
    with rig.http() as a, rig.http() as b:
        start = a.get("/console/login/oidc")
        assert start.status_code == 303
        params = parse_qs(urlsplit(start.headers["location"]).query)
        assert params["response_type"] == ["code"] and params["client_id"] == ["ikepki-console"]
        assert params["code_challenge_method"] == ["S256"] and len(params["code_challenge"][0]) == 43
        assert params["redirect_uri"] == [f"{rig.server.https_url}/console/oidc/callback"]
        assert len(params["state"][0]) >= 43 and len(params["nonce"][0]) >= 43
        cookie = start.headers["set-cookie"]
        assert cookie.startswith("__Host-ikepki-oidc=") and "SameSite=Lax" in cookie and "HttpOnly" in cookie

        # another browser (no pre-login cookie) cannot finish this sign-in
        stolen = b.get("/console/oidc/callback", params={"code": "x", "state": params["state"][0]})
        assert stolen.status_code == 400 and "not started in this browser" in stolen.text
        # a wrong state consumes the sign-in: the right one afterwards finds nothing either
        wrong = a.get("/console/oidc/callback", params={"code": "x", "state": "y" * 43})
        assert wrong.status_code == 400 and "state does not match" in wrong.text
        again = a.get("/console/oidc/callback", params={"code": "x", "state": params["state"][0]})
        assert again.status_code == 400

    # a complete sign-in over HTTP; replaying its callback (code and state) signs nobody in
    with rig.http() as a:
        callback = follow_to_callback(rig, a, "erin")
        done = a.get(callback)
        assert done.status_code == 200 and 'id="signed-in"' in done.text, done.text
        assert any(c.startswith("__Host-ikepki-console=") for c in done.headers.get_list("set-cookie"))
        assert a.get("/console/").status_code == 200
        replay = a.get(callback)
        assert replay.status_code == 400
    # the code in another sign-in (its own state and cookie, another PKCE verifier): the provider refuses it
    with rig.http() as c:
        other = c.get("/console/login/oidc")
        state = parse_qs(urlsplit(other.headers["location"]).query)["state"][0]
        code = parse_qs(urlsplit(callback).query)["code"][0]
        injected = c.get("/console/oidc/callback", params={"code": code, "state": state})
        assert injected.status_code == 401 and "refused the authorization code" in injected.text, injected.text
        assert c.get("/console/").status_code == 303  # not signed in


def test_error_from_the_provider_is_shown_and_nothing_signed_in(rig):  # type: ignore[no-untyped-def]
    with rig.http() as a:
        start = a.get("/console/login/oidc")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        resp = a.get("/console/oidc/callback", params={"error": "access_denied", "state": state,
                                                        "error_description": "<script>x()</script>"})
        assert resp.status_code == 401 and "access_denied" in resp.text and "<script>x" not in resp.text
        assert a.get("/console/").status_code == 303


@given(code=st.text(TEXT, max_size=300), state=st.text(TEXT, max_size=80), error=st.text(TEXT, max_size=40),
       with_cookie=st.booleans())
@settings(max_examples=40, deadline=None)
def test_arbitrary_callbacks_sign_nobody_in(rig, code: str, state: str, error: str,  # type: ignore[no-untyped-def]
                                            with_cookie: bool) -> None:
    with rig.http() as a:
        if with_cookie:
            assert a.get("/console/login/oidc").status_code == 303
        resp = a.get("/console/oidc/callback", params={"code": code, "state": state, "error": error})
        assert resp.status_code in (400, 401, 422), (resp.status_code, resp.text[:300])
        assert not any(c.startswith("__Host-ikepki-console=") for c in resp.headers.get_list("set-cookie"))
        assert a.get("/console/").status_code == 303


# -- helpers ------------------------------------------------------------------------------------

def enroll_user_certificate(rig: ConsoleIdp, login: str) -> str:
    """A user certificate through ``POST /user/v1/certificates`` with a fresh ID token (device grant)."""
    return str(enroll_user(rig, login)[0]["serial"])


def enroll_user(rig: ConsoleIdp, login: str) -> tuple[dict[str, Any], bytes]:
    """(the enrollment answer: serial, certificate, chain, …; the private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                              login)]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    with rig.http() as http:
        resp = http.post("/user/v1/certificates", json={"id_token": rig.idp.id_token(login), "csr": csr,
                                                        "provider": "corp"})
    assert resp.status_code == 201, resp.text
    return resp.json(), key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())


def status_of(rig: ConsoleIdp, serial: str) -> str:
    with rig.http() as http:
        resp = http.get(f"/admin/v1/certificates/{serial}",
                        headers={"authorization": f"Bearer {rig.server.admin_token()}"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


