"""The console in a real browser (headless Chromium via Selenium and Debian's chromedriver) against
a real ``ikepki serve``: sign-in, search, the overview charts, roles, CSRF, escaping of
attacker-controlled certificate fields, and revoke with preview and confirmation reaching a real
strongSwan gateway (its IKE SA is deleted)."""

from __future__ import annotations

import os
import re
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)

from ca.csr import parse_csr
from ca.errors import PKIError
from ca.model import IssuanceRequest, Requester
from tests.console.conftest import Browser, http_client

pytestmark = [pytest.mark.interop, pytest.mark.slow]
SCREENSHOTS = os.environ.get("IKEPKI_CONSOLE_SCREENSHOTS")  # a directory: save README screenshots there


def wait_for(predicate, timeout: float, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def no_alert(b: Browser) -> bool:
    try:
        _ = b.driver.switch_to.alert.text
    except NoAlertPresentException:
        return True
    return False


def audit_rows(incident: Any, actor: str, **filters: Any) -> list[dict[str, Any]]:
    return [r for r in incident.deployment.store.audit_events(actor=actor, limit=1000)
            if all(r["detail"].get(k) == v if k in r["detail"] else r.get(k) == v for k, v in filters.items())]


def token_name(incident: Any, token: str) -> str:
    found = incident.deployment.store.verify_admin_token(token)
    assert found is not None
    return str(found[0])


def test_sign_in_overview_charts_and_search(incident, browser, tokens):  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    email = f"overview-{tag}@example.test"
    _, _, serial = incident.issue("user", x509.RFC822Name(email), f"overview-{tag}")
    _, _, gone = incident.issue("user", x509.RFC822Name(f"gone-{tag}@example.test"), f"gone-{tag}")
    with incident.api() as api:
        assert api.post("/revocations", json={"serials": [gone], "reason": "superseded"}).status_code == 200

    b = browser
    b.get("/console/")
    assert "/console/login" in b.driver.current_url  # not signed in: sent to sign-in
    b.sign_in(tokens["viewer"])
    assert b.driver.current_url.endswith("/console/")
    assert "(viewer)" in b.text("#whoami")
    cookie = next(c for c in b.driver.get_cookies() if c["name"] == "__Host-ikepki-console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and "expiry" not in cookie
    assert tokens["viewer"] not in b.driver.page_source  # the token is never rendered back

    # the activity chart: this hour's bars count what the store holds (>= the two just made)
    now = incident.deployment.clock.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    issued_bars = b.find_all("#chart-activity rect[data-series=issued]")
    revoked_bars = b.find_all("#chart-activity rect[data-series=revoked]")
    assert len(issued_bars) == len(revoked_bars) == 24
    issued_now = int(issued_bars[-1].get_attribute("data-value"))
    revoked_now = int(revoked_bars[-1].get_attribute("data-value"))
    assert issued_now >= 2 and revoked_now >= 1
    assert issued_now == len(incident.deployment.store.issued_times(hour, now + timedelta(seconds=5)))
    assert issued_bars[-1].size["height"] > 0 and revoked_bars[-1].size["height"] > 0  # drawn, not just in the DOM
    expiry_bars = b.find_all("#chart-expiry rect[data-series=expiring]")
    assert len(expiry_bars) == 7
    assert int(b.text("#fig-issued")) >= 2
    assert "test" in b.text("#protocols")  # the channel these were issued through

    # search by identity, then the detail page
    b.get("/console/certificates")
    b.find("input[name=identity]").send_keys(email)
    b.click("#search-go")
    rows = b.find_all("#results tbody tr")
    assert len(rows) == 1 and serial in rows[0].text, b.page_text()
    b.click("#results tbody tr a")
    assert b.text("#serial") == serial
    assert f"email:{email}" in b.text("#sans")
    assert "valid" in b.text("#ocsp-status")
    assert not b.find_all("#revoke-this") and not b.find_all("#nav-revoke")  # a viewer never sees the action
    b.get(f"/console/certificates/{gone}")
    assert "revoked" in b.text("#ocsp-status") and "superseded" in b.text("#ocsp-status")
    assert "revoke" in b.text("#history")  # the audit history of this certificate


def test_viewer_cannot_revoke_and_is_audited(incident, browser, tokens):  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    _, _, serial = incident.issue("user", x509.RFC822Name(f"viewer-{tag}@example.test"), f"viewer-{tag}")
    b = browser
    b.sign_in(tokens["viewer"])
    who = token_name(incident, tokens["viewer"])
    b.get("/console/revoke")
    assert b.text("#error-status") == "403"
    assert not b.find_all("#serials")
    # a hand-made form with the viewer's own valid CSRF token is refused all the same
    b.get("/console/")
    csrf = b.find("form.who input[name=csrf]").get_attribute("value")
    for path in ("/console/revoke/preview", "/console/revoke/execute"):
        b.submit_script(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
            "for (const [k, v] of Object.entries(arguments[1])) { const i = document.createElement('input');"
            " i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }"
            "document.body.appendChild(f); f.submit();",
            path, {"csrf": csrf, "serials": serial, "action": "revoke", "reason": "keyCompromise",
                   "confirm_count": "1", "plan": "x"})
        assert b.text("#error-status") == "403", b.page_text()
        assert "needs revoker" in b.text("#error-detail")
    assert incident.cert_status(serial) == "valid"
    refused = [r for r in audit_rows(incident, who) if r["action"] == "console" and r["detail"]["status"] == 403
               and r["detail"]["method"] == "POST"]
    assert {r["detail"]["path"] for r in refused} >= {"/console/revoke/preview", "/console/revoke/execute"}
    assert all(r["detail"]["role"] == "viewer" and r["channel"] == "console" for r in refused)


def test_post_without_csrf_token_is_refused(incident, browser, tokens):  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    _, _, serial = incident.issue("user", x509.RFC822Name(f"csrf-{tag}@example.test"), f"csrf-{tag}")
    b = browser
    b.sign_in(tokens["revoker"])
    b.get(f"/console/revoke?serial={serial}")
    b.driver.execute_script("document.querySelector('#revoke-form input[name=csrf]').remove()")  # a forged form
    b.click("#preview")
    assert b.text("#error-status") == "403"
    assert "CSRF" in b.text("#error-detail")
    # the same with the session cookie lifted out of the browser (a forged cross-site request)
    cookie = b.cookies()["__Host-ikepki-console"]
    with http_client(incident) as http:
        http.cookies.set("__Host-ikepki-console", cookie, domain="127.0.0.1")
        assert http.get("/console/revoke").status_code == 200  # the cookie itself is good
        forged = http.post("/console/revoke/preview", data={"serials": serial, "action": "revoke",
                                                             "reason": "keyCompromise"})
        assert forged.status_code == 403
        wrong = http.post("/console/revoke/preview", data={"csrf": "x" * 43, "serials": serial,
                                                            "action": "revoke", "reason": "keyCompromise"})
        assert wrong.status_code == 403
        headers = http.get("/console/revoke").headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert incident.cert_status(serial) == "valid"

    # sign-out ends the session on the server: the lifted cookie no longer works
    b.get("/console/")
    b.click("#logout")
    assert "/console/login" in b.driver.current_url
    with http_client(incident) as http:
        http.cookies.set("__Host-ikepki-console", cookie, domain="127.0.0.1")
        resp = http.get("/console/")
        assert resp.status_code == 303 and resp.headers["location"].startswith("/console/login")


def test_markup_in_certificate_fields_renders_inert(incident, browser, tokens):  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    cn = '<script>__xss=1</script>"><img src=x onerror=__xss=2>'
    assert len(cn) <= 64  # the X.520 upper bound of a common name
    device = f'"><img src=x onerror=window.__xss=3>{tag}'
    email = f"xss-{tag}@example.test"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
           .sign(key, hashes.SHA256()))
    # the subject comes from CA-controlled data (an MDM registration granted this CN; the
    # registration's content is whatever the MDM was told)
    grant = (x509.NameAttribute(x509.NameOID.COMMON_NAME, cn),)
    issued = incident.deployment.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(Encoding.PEM)), "user",
                                                                 Requester("test", "console"), device_id=device,
                                                                 subject_grants=grant))
    serial = issued.info.serial_hex
    # without the grant the CA drops the attribute
    plain = incident.deployment.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(Encoding.PEM)), "user",
                                                                Requester("test", "console")))
    assert plain.info.subject == ""
    # markup in a SAN never gets that far: the Authority refuses it (so it cannot reach the store)
    bad = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name('"><img src=x onerror=a()>@x.test')]),
                          critical=False).sign(key, hashes.SHA256()))
    with pytest.raises(PKIError):
        incident.deployment.authority.issue(IssuanceRequest(parse_csr(bad.public_bytes(Encoding.PEM)), "user",
                                                            Requester("test", "console")))

    b = browser
    b.sign_in(tokens["revoker"])
    for path in (f"/console/certificates?identity={email}", f"/console/certificates/{serial}",
                 f"/console/devices?q={tag}", f"/console/audit?serial={serial}",
                 f"/console/audit?serial={plain.info.serial_hex}", f"/console/certificates/{plain.info.serial_hex}"):
        b.get(path)
        assert no_alert(b)
        assert b.driver.execute_script("return window.__xss === undefined"), path
        assert not b.find_all("main img") and not b.find_all("main script"), path
    b.get(f"/console/certificates/{serial}")
    shown = b.text("#subject")
    assert shown.replace("\\", "") == f"CN={cn}"  # the literal text (less RFC 4514's backslash escapes)
    assert b.find("dd a[href*='device']").text == device  # the device id: shown literally, link percent-encoded
    b.click("dd a[href*='device']")
    assert b.text("#device-id") == device
    assert b.driver.execute_script("return window.__xss === undefined") and no_alert(b)
    # the revoke preview echoes the device back into a form: still inert
    b.get("/console/revoke")
    b.find("#device_id").send_keys(device)
    b.click("#preview")
    assert b.text("#target-count") == "1"
    hidden = b.find("#confirm-form input[name=device_id]").get_attribute("value")
    assert hidden == device
    assert b.driver.execute_script("return window.__xss === undefined") and no_alert(b)
    severe = [e for e in b.driver.get_log("browser") if "__xss" in e.get("message", "")]
    assert not severe, severe


def test_device_posture_on_the_certificate_page_renders_inert(incident, browser, tokens):  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    device = f"laptop-posture-{tag}"
    _, _, serial = incident.issue("user", x509.RFC822Name(f"posture-{tag}@example.test"), f"posture-{tag}",
                                  device_id=device)
    _, _, plain = incident.issue("user", x509.RFC822Name(f"noposture-{tag}@example.test"), f"noposture-{tag}")
    reason = '<img src=x onerror=window.__xss=4>"> EDR not running'
    with incident.api() as api:  # an operator's verdict through the posture package's admin route
        resp = api.post("/posture", json={"device": device, "verdict": "quarantine", "reason": reason})
        assert resp.status_code == 200, resp.text
    b = browser
    b.sign_in(tokens["viewer"])
    b.get(f"/console/certificates/{serial}")
    assert b.text("#posture-verdict") == "quarantine"
    assert b.text("#posture-reasons") == reason  # the literal text
    assert b.text("#posture-at").endswith("UTC")
    assert "operator by " in b.text("#posture")
    assert not b.find_all("main img") and b.driver.execute_script("return window.__xss === undefined")
    assert no_alert(b)
    b.get(f"/console/certificates/{plain}")  # no device: no posture row
    assert not b.find_all("#posture")
    with incident.api() as api:  # cleared by an operator: the latest verdict is shown
        assert api.post("/posture", json={"device": device, "verdict": "compliant",
                                          "reason": "EDR back"}).status_code == 200
    b.get(f"/console/certificates/{serial}")
    assert b.text("#posture-verdict") == "compliant" and b.text("#posture-reasons") == "EDR back"


def test_revoke_with_preview_deletes_the_strongswan_sa(incident, swan_rig, browser, tokens, capsys):  # type: ignore[no-untyped-def]
    rig = swan_rig
    ok, log = rig.client.initiate("vpn")
    assert ok, f"client could not connect:\n{log}\n--- gateway ---\n{rig.gateway.log()[-3000:]}"
    assert wait_for(lambda: rig.gateway.established(rig.client_id), 5), rig.gateway.ike_sas()

    b = browser
    b.sign_in(tokens["revoker"])
    who = token_name(incident, tokens["revoker"])
    b.get(f"/console/certificates/{rig.client_serial}")
    b.click("#revoke-this")
    assert b.find("#serials").get_attribute("value") == rig.client_serial
    b.click("#preview")
    # the dry run: exactly this certificate, and the gateway holding its live SA
    assert b.text("#target-count") == "1"
    assert b.text("#live-count") == "1", b.page_text()
    rows = b.find_all("#targets tbody tr")
    assert len(rows) == 1 and rig.client_serial in rows[0].text
    assert rows[0].find_element("css selector", "td.live").text == rig.gateway_name
    assert rig.gateway.established(rig.client_id)  # the preview changed nothing
    assert incident.cert_status(rig.client_serial) == "valid"
    if SCREENSHOTS:
        b.driver.save_screenshot(str(Path(SCREENSHOTS) / "console-revoke-preview.png"))

    confirm = b.find("#confirm")
    assert not confirm.is_enabled()  # enhancement: disabled until the count is typed
    b.find("#confirm_count").send_keys("2")
    assert not confirm.is_enabled()
    b.find("#confirm_count").clear()
    b.find("#confirm_count").send_keys("1")
    assert confirm.is_enabled()
    started = time.monotonic()
    b.click("#confirm")
    assert "/console/revocations" in b.driver.current_url, b.page_text()
    assert wait_for(lambda: not rig.gateway.established(rig.client_id), 15, 0.01), \
        f"gateway SA still up after the console revocation:\n{rig.gateway.log()[-3000:]}"
    with capsys.disabled():
        print(f"\n[console] confirm clicked -> strongSwan SA deleted: {(time.monotonic() - started) * 1000:.0f} ms")
    # the result page follows the push until delivered (it reloads itself while pending)

    def delivered() -> bool:
        try:
            row = b.find(f"#deliveries tr[data-gateway='{rig.gateway_name}']")
            return bool(row.find_element("css selector", "td.delivered").text == "1")
        except (NoSuchElementException, StaleElementReferenceException):  # the page reloads itself meanwhile
            return False

    assert wait_for(delivered, 20, 0.3), b.page_text()
    assert wait_for(lambda: b.find_all("#all-delivered"), 20, 0.3)
    if SCREENSHOTS:
        b.get("/console/")
        b.driver.save_screenshot(str(Path(SCREENSHOTS) / "console-overview.png"))
    assert incident.cert_status(rig.client_serial) == "revoked"
    assert wait_for(lambda: not rig.client.established(), 5), "client still has the IKE_SA (no Delete seen)"
    revoked = [r for r in incident.deployment.store.audit_events(serial=int(rig.client_serial, 16))
               if r["action"] == "revoke"]
    assert revoked and revoked[0]["actor"] == who and revoked[0]["channel"] == "console", revoked


def test_wrong_count_or_changed_selection_revokes_nothing(incident, browser, tokens):  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    _, _, serial = incident.issue("user", x509.RFC822Name(f"count-{tag}@example.test"), f"count-{tag}")
    b = browser
    b.sign_in(tokens["revoker"])
    b.get(f"/console/revoke?serial={serial}")
    b.find("#action-hold").click()
    b.click("#preview")
    assert b.text("#target-count") == "1"
    # without the script the button would be enabled: submit a wrong count as a script-less browser would
    b.submit_script("document.getElementById('confirm').disabled = false;"
                            "document.getElementById('confirm_count').value = '7';"
                            "document.getElementById('confirm-form').submit();")
    assert b.text("#error-status") == "400" and "nothing was revoked" in b.text("#error-detail")
    assert incident.cert_status(serial) == "valid"
    # the selection changes between preview and confirmation: refused
    b.get(f"/console/revoke?serial={serial}")
    b.find("#action-hold").click()
    b.click("#preview")
    assert b.text("#target-count") == "1"
    with incident.api() as api:
        assert api.post("/revocations", json={"serials": [serial], "reason": "unspecified",
                                                    "hold": True}).status_code == 200
    b.submit_script("document.getElementById('confirm').disabled = false;"
                            "document.getElementById('confirm_count').value = '1';"
                            "document.getElementById('confirm-form').submit();")
    assert b.text("#error-status") == "409", b.page_text()
    assert re.search("changed since the preview", b.text("#error-detail"))
