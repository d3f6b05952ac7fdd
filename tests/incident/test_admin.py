"""Admin API roles and the revoke CLI's safety rails: dry run by default, viewer cannot revoke,
no credential is 401, refusals change nothing and are audited."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.cli.common import EXIT, EXIT_DRY_RUN
from ca.errors import ErrorKind, PKIError
from ca.model import parse_serial
from ca.revocation import read_serials_file
from ca.service.admin import AdminAuthenticator, AdminGate, Viewer, install_problem_handlers

ADMIN_CERT_SUBJECT = "CN=incident-admin-cert"  # mapped to "revoker" in the module server's env (conftest)


def _cert(incident, what: str, device: str | None = None) -> str:  # type: ignore[no-untyped-def]
    tag = os.urandom(3).hex()
    return str(incident.issue("user", x509.RFC822Name(f"{what}-{tag}@example.test"), f"{what}-{tag}",
                              device_id=device)[2])


def _audit_lines(incident) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in (incident.dir / "audit.log").read_text().splitlines()]


def test_dry_run_is_the_default_and_changes_nothing(incident):  # type: ignore[no-untyped-def]
    serial = _cert(incident, "dry")
    local = incident.ikepki("revoke", serial, "--reason", "keyCompromise", check=False)
    assert local.returncode == EXIT_DRY_RUN, local.stderr
    assert serial[:8] in local.stdout and "nothing changed" in local.stdout
    remote = incident.remote("revoke", serial, "--reason", "keyCompromise", "--json", check=False)
    assert remote.returncode == EXIT_DRY_RUN, remote.stderr
    plan = json.loads(remote.stdout)
    assert plan["dry_run"] is True and [t["serial"] for t in plan["targets"]] == [serial]
    assert incident.cert_status(serial) == "valid"
    assert incident.deliveries(serial) == []


def test_dry_run_keeps_serial_and_identity_whole_in_narrow_terminals(incident):  # type: ignore[no-untyped-def]
    """A responder copies serials and identities off the dry run: at 80 and 60 columns they are
    printed whole (list layout), not ellipsised."""
    from tests.conftest import run_ikepki

    tag = os.urandom(3).hex()
    identity = f"a-rather-long-mailbox-name-{tag}@corp-division.example.test"
    serial = str(incident.issue("user", x509.RFC822Name(identity), f"narrow-{tag}")[2])
    for columns in ("80", "60"):
        proc = run_ikepki("revoke", serial, "--reason", "keyCompromise", directory=incident.dir, check=False,
                          env={"COLUMNS": columns})
        assert proc.returncode == EXIT_DRY_RUN, proc.stderr
        lines = proc.stdout.splitlines()
        assert any(line.split() == ["serial:", serial] for line in lines), proc.stdout
        assert any(line.split() == ["identity:", f"email:{identity}"] for line in lines), proc.stdout
        assert "…" not in proc.stdout


def test_viewer_token_cannot_revoke(incident):  # type: ignore[no-untyped-def]
    serial = _cert(incident, "viewer")
    viewer = incident.token_file("viewer", "viewer")
    proc = incident.remote("revoke", serial, "--reason", "keyCompromise", "--yes", token_file=viewer, check=False)
    assert proc.returncode == EXIT[ErrorKind.FORBIDDEN], proc.stdout + proc.stderr
    assert "403" in proc.stderr
    with incident.api(viewer.read_text()) as api:
        assert api.get(f"/certificates/{serial}").status_code == 200  # viewers may look
        resp = api.post("/revocations", json={"serials": [serial], "reason": "keyCompromise"})
        assert resp.status_code == 403 and resp.headers["content-type"] == "application/problem+json"
        assert api.post("/revocations", json={"serials": [serial], "reason": "keyCompromise",
                                              "dry_run": True}).status_code == 200
        assert api.post("/devices/d1/block", json={}).status_code == 403
        assert api.post("/tokens", json={"name": "x", "role": "admin"}).status_code == 403
    assert incident.cert_status(serial) == "valid"
    assert incident.deliveries(serial) == []
    denied = [a for a in _audit_lines(incident) if a["action"] == "admin-api" and a.get("status") == 403]
    assert any(a["actor"].startswith("viewer-") and a["path"] == "/admin/v1/revocations" for a in denied)


def test_unauthenticated_is_401_and_changes_nothing(incident):  # type: ignore[no-untyped-def]
    serial = _cert(incident, "anon")
    for headers in ({}, {"authorization": "Bearer not-a-token"}, {"authorization": "Basic YWRtaW46YWRtaW4="}):
        with incident.api("") as api:
            resp = api.post("/revocations", json={"serials": [serial], "reason": "keyCompromise"}, headers=headers)
            assert resp.status_code == 401, resp.text
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert api.get("/certificates", headers=headers).status_code == 401
    assert incident.cert_status(serial) == "valid"
    assert any(a["action"] == "admin-api" and a.get("status") == 401 and a["actor"] == "anonymous"
               for a in _audit_lines(incident))


def test_revoker_role_hold_unhold_and_device_block(incident):  # type: ignore[no-untyped-def]
    device = f"dev-{os.urandom(3).hex()}"
    serial = _cert(incident, "hold", device)
    revoker = incident.token_file("revoker", "revoker").read_text()
    with incident.api(revoker) as api:
        found = api.get("/certificates", params={"device_id": device}).json()["items"]
        assert [c["serial"] for c in found] == [serial]
        resp = api.post("/revocations", json={"device_id": device, "reason": "unspecified", "hold": True})
        assert resp.status_code == 200 and resp.json()["revoked"] == [serial], resp.text
        assert api.get(f"/certificates/{serial}").json()["status"] == "hold"
        assert api.delete(f"/revocations/{serial}").json()["status"] == "valid"
        blocked = api.post(f"/devices/{device}/block", json={"reason": "stolen"}).json()
        assert blocked["blocked"] is True and blocked["block_reason"] == "stolen"
        assert api.delete(f"/devices/{device}/block").json()["blocked"] is False
        assert api.post("/gateways", json={"name": "nope", "kind": "webhook", "url": "http://x"}).status_code == 403
        assert api.get("/tokens").status_code == 403
        unknown = api.post("/revocations", json={"serials": ["abcdef12345"], "reason": "keyCompromise"})
        assert unknown.status_code == 404
        bad = api.post("/revocations", json={"serials": [serial], "reason": "becauseISaidSo"})
        assert bad.status_code == 400


def test_cli_identity_selector_and_exit_codes(incident):  # type: ignore[no-untyped-def]
    tag = os.urandom(3).hex()
    ident = f"ident-{tag}@example.test"
    serials = [incident.issue("user", x509.RFC822Name(ident), f"ident-{tag}-{i}")[2] for i in range(2)]
    from typer.testing import CliRunner

    from ca.cli.main import app

    runner = CliRunner()
    remote = ["--server", incident.url, "--token", str(incident.dir / "admin-token"), "--ca-bundle",
              str(incident.dir / "root-ca.pem")]
    proc = runner.invoke(app, ["revoke", "--identity", ident, "--reason", "affiliationChanged", "--yes", "--json",
                               "--wait", "0", *remote])
    assert proc.exit_code == 0, proc.output
    result = json.loads(proc.output)
    assert sorted(result["revoked"]) == sorted(serials)
    assert all(incident.cert_status(s) == "revoked" for s in serials)
    with incident.api() as api:
        openapi = api.get("/openapi.json").json()
    assert "/admin/v1/revocations" in openapi["paths"]
    local = ["--dir", str(incident.dir)]
    assert runner.invoke(app, ["revoke", "ffff01", "--reason", "keyCompromise", *local]).exit_code == 3
    assert runner.invoke(app, ["revoke", "ffff01", "--reason", "keyCompromise", "--yes", *remote]).exit_code == 3
    assert runner.invoke(app, ["revoke", serials[0], "--reason", "nonsense", *local]).exit_code == 5
    assert runner.invoke(app, ["revoke", "--reason", "keyCompromise", *local]).exit_code == 5  # no target


def test_openapi_and_body_bound(incident):  # type: ignore[no-untyped-def]
    with incident.api() as api:
        big = api.post("/revocations", content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
                       headers={"content-type": "application/json"})
        assert big.status_code == 413
    with httpx.Client(verify=False) as c:
        assert c.get(f"{incident.url}/admin/v1/openapi.json").status_code == 200


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_serials_file_parser_never_crashes(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("fuzz") / "serials"
    path.write_bytes(data)
    try:
        for s in read_serials_file(path):
            assert 0 < s < 2 ** 160
    except PKIError as exc:
        assert exc.kind is ErrorKind.BAD_REQUEST


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_serial_parser_never_crashes(text: str) -> None:
    try:
        assert 0 < parse_serial(text) < 2 ** 160
    except PKIError as exc:
        assert exc.kind is ErrorKind.BAD_REQUEST


def test_admin_client_certificate_maps_to_a_role_until_revoked(incident):  # type: ignore[no-untyped-def]
    pem, key, serial = incident.issue("user", x509.RFC822Name(f"ops-{os.urandom(3).hex()}@example.test"),
                                      "incident-admin-cert")
    ctx = ssl.create_default_context(cafile=str(incident.dir / "root-ca.pem"))
    ctx.load_cert_chain(str(pem), str(key))
    with httpx.Client(base_url=f"{incident.url}/admin/v1", verify=ctx, timeout=30) as api:
        me = api.get("/whoami").json()
        assert me == {"name": ADMIN_CERT_SUBJECT, "role": "revoker", "method": "certificate", "source": "127.0.0.1"}
        assert api.get("/tokens").status_code == 403  # revoker, not admin
        done = api.post("/revocations", json={"serials": [serial], "reason": "superseded"})
        assert done.status_code == 200 and done.json()["revoked"] == [serial]  # it revoked itself...
        assert api.get("/whoami").status_code == 401  # ...and is refused from now on


def test_profile_selector_needs_a_filter(incident):  # type: ignore[no-untyped-def]
    tag = os.urandom(3).hex()
    serial = incident.issue("user", x509.RFC822Name(f"prof-{tag}@example.test"), f"prof-{tag}")[2]
    with incident.api() as api:
        plain = api.post("/revocations", json={"profile": "user", "reason": "superseded", "dry_run": True})
        assert plain.status_code == 400  # a whole profile only with all_of_profile
        narrowed = api.post("/revocations", json={"profile": "user", "san_contains": f"prof-{tag}@",
                                                  "reason": "superseded", "dry_run": True}).json()
        assert [t["serial"] for t in narrowed["targets"]] == [serial]
    assert incident.cert_status(serial) == "valid"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
                     max_leaves=12)
_fields = st.fixed_dictionaries({}, optional={k: _json for k in (
    "serials", "device_id", "identity", "profile", "reason", "hold", "dry_run", "expires_before", "all_of_profile")})


@settings(max_examples=40, deadline=None)
@given(body=_fields | _json)
def test_revocation_body_fuzz_never_5xx(incident, body) -> None:  # type: ignore[no-untyped-def]
    if isinstance(body, dict) and "reason" in body:
        body["dry_run"] = True  # nothing may change even when the body happens to be valid
    with incident.api() as api:
        resp = api.post("/revocations", json=body)
    assert resp.status_code < 500, (body, resp.text)
    if resp.status_code == 200:
        assert resp.json()["dry_run"] is True


def test_cli_hold_unhold_and_block_device_in_process(incident):  # type: ignore[no-untyped-def]
    """The same commands run in-process (typer's runner) against the local deployment."""
    from typer.testing import CliRunner

    from ca.cli.main import app

    device = f"laptop-{os.urandom(3).hex()}"
    serial = _cert(incident, "cli-hold", device)
    d = str(incident.dir)
    runner = CliRunner()
    held = runner.invoke(app, ["revoke", serial, "--hold", "--yes", "--json", "--wait", "0", "--dir", d])
    assert held.exit_code == 0, held.output
    assert json.loads(held.output)["reason"] == "certificateHold" and incident.cert_status(serial) == "hold"
    released = runner.invoke(app, ["unhold", serial, "--json", "--dir", d])
    assert released.exit_code == 0 and json.loads(released.output)["status"] == "valid", released.output
    gone = runner.invoke(app, ["revoke", "--device", device, "--reason", "keyCompromise", "--block-device", "--yes",
                               "--json", "--wait", "0", "--dir", d])
    assert gone.exit_code == 0, gone.output
    result = json.loads(gone.output)
    assert result["revoked"] == [serial] and result["blocked_devices"] == [device]
    assert incident.deployment.store.is_device_blocked(device, None)
    try:
        _cert(incident, "cli-hold-again", device)
        raise AssertionError("a blocked device got a certificate")
    except PKIError as exc:
        assert exc.kind is ErrorKind.BLOCKED
    again = runner.invoke(app, ["unhold", serial, "--dir", d])
    assert again.exit_code == EXIT[ErrorKind.CONFLICT]  # revoked for good, not on hold


def test_tty_confirmation_executes_on_yes(incident):  # type: ignore[no-untyped-def]
    """On a terminal the dry run asks; answering y revokes (no --yes needed)."""
    import pty
    import subprocess

    from tests.conftest import IKEPKI

    serial = _cert(incident, "tty")
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    proc = subprocess.Popen([IKEPKI, "revoke", serial, "--reason", "keyCompromise", "--wait", "0", "--dir",
                             str(incident.dir)], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while b"[y/N]" not in out:
        chunk = os.read(master, 4096)
        assert chunk, out
        out += chunk
    os.write(master, b"y\n")
    with contextlib.suppress(OSError):
        while chunk := os.read(master, 4096):
            out += chunk
    assert proc.wait(120) == 0, out.decode(errors="replace")
    os.close(master)
    assert incident.cert_status(serial) == "revoked"


def test_subject_filter_is_literal_and_guards_count_hits(incident):  # type: ignore[no-untyped-def]
    """Defect 21.3: ``subject_contains`` went into SQL LIKE unescaped, so ``_`` matched any character
    (``host_1`` selected ``hostA1``) and ``%`` selected a whole profile past the all_of_profile guard."""
    tag = os.urandom(3).hex()
    wanted = incident.issue("user", x509.RFC822Name(f"lk1-{tag}@example.test"), f"lk{tag}_1")[2]
    other = incident.issue("user", x509.RFC822Name(f"lk2-{tag}@example.test"), f"lk{tag}A1")[2]
    with incident.api() as api:
        hit = api.post("/revocations", json={"profile": "user", "subject_contains": f"lk{tag}_1",
                                             "reason": "superseded", "dry_run": True})
        assert hit.status_code == 200, hit.text
        assert [t["serial"] for t in hit.json()["targets"]] == [wanted]
        found = api.get("/certificates", params={"subject": f"lk{tag}_"}).json()["items"]
        assert [c["serial"] for c in found] == [wanted]
        resp = api.post("/revocations", json={"profile": "user", "subject_contains": "%",
                                              "reason": "superseded", "dry_run": True})
        assert resp.status_code == 200 and resp.json()["targets"] == [], resp.text
        # a filter that hits every certificate of the profile is no filter (an expiry filter: since
        # issue 21 defect 1 a subject may be empty, so no subject substring is in every certificate)
        resp = api.post("/revocations", json={"profile": "user", "expires_after": "2000-01-01T00:00:00Z",
                                              "reason": "superseded", "dry_run": True})
        assert resp.status_code == 400 and "all_of_profile" in resp.json()["detail"], resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        everyone = api.post("/revocations", json={"profile": "user", "subject_contains": "CN=",
                                                  "all_of_profile": True, "reason": "superseded", "dry_run": True})
        assert everyone.status_code == 200 and {wanted, other} <= {t["serial"] for t in everyone.json()["targets"]}
    local = incident.ikepki("revoke", "--profile", "user", "--subject", f"lk{tag}_1", "--reason", "superseded",
                           "--json", check=False)
    assert local.returncode == EXIT_DRY_RUN, local.stderr
    assert [t["serial"] for t in json.loads(local.stdout)["targets"]] == [wanted]
    literal = incident.ikepki("revoke", "--profile", "user", "--subject", "%", "--reason", "superseded", "--json",
                             check=False)
    assert literal.returncode == EXIT_DRY_RUN and json.loads(literal.stdout)["targets"] == [], literal.stdout
    guarded = incident.ikepki("revoke", "--profile", "user", "--expires-after", "2000-01-01", "--reason",
                             "superseded", "--json", check=False)
    assert guarded.returncode == EXIT[ErrorKind.BAD_REQUEST] and "all-of-profile" in guarded.stderr, guarded.stderr
    assert incident.cert_status(wanted) == "valid" and incident.cert_status(other) == "valid"


def test_est_and_scep_admin_routes_are_one_audited_surface(incident):  # type: ignore[no-untyped-def]
    """Defects 20.3 / 21.10: /admin/v1/est and /admin/v1/scep had their own bearer checks, ignored
    roles below admin only by accident, answered non-problem errors and audited no refusal."""
    tag = os.urandom(3).hex()
    reg = {"devices": [{"device_id": f"surface-{tag}", "profile": "machine", "sans": [f"DNS:s-{tag}.example.test"]}]}
    viewer = incident.token_file("viewer", "viewer").read_text()
    with incident.api(viewer) as api:
        for path, body in (("/est/registrations", reg), ("/scep/challenges", {"profile": "machine"})):
            resp = api.post(path, json=body)
            assert resp.status_code == 403, resp.text
            assert resp.headers["content-type"] == "application/problem+json" and resp.json()["status"] == 403
        assert api.get(f"/est/registrations/surface-{tag}").status_code == 403
    with incident.api("") as anon:
        for path, body in (("/est/registrations", reg), ("/scep/challenges", {})):
            resp = anon.post(path, json=body, headers={"authorization": "Bearer wrong"})
            assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer"), resp.text
            assert resp.headers["content-type"] == "application/problem+json"
    with incident.api() as api:
        big = api.post("/scep/challenges", content=b"{" * 10_000, headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.headers["content-type"] == "application/problem+json", big.text
        invalid = api.post("/revocations", json={"reason": ["not", "a", "name"]})
        assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/problem+json"
        nowhere = api.get(f"/no-such-{tag}")
        assert nowhere.status_code == 404 and nowhere.headers["content-type"] == "application/problem+json"
        assert api.get(f"/est/registrations/surface-{tag}").status_code == 404
        created = api.post("/est/registrations", json=reg)
        assert created.status_code == 201 and created.json()["registrations"][0]["secret"], created.text
        paths = api.get("/openapi.json").json()["paths"]
        assert {"/admin/v1/est/registrations", "/admin/v1/scep/challenges", "/admin/v1/revocations"} <= set(paths)
        for path in ("/admin/v1/est/registrations", "/admin/v1/scep/challenges", "/admin/v1/revocations"):
            documented = paths[path]["post"]["responses"]
            assert {"401", "403", "413", "422"} <= set(documented), (path, documented)
    calls = [(a["path"], a["status"], a["actor"] == "anonymous") for a in _audit_lines(incident)
             if a["action"] == "admin-api"]
    for path, status, anonymous in (("/admin/v1/est/registrations", 403, False),
                                    ("/admin/v1/scep/challenges", 403, False),
                                    (f"/admin/v1/est/registrations/surface-{tag}", 403, False),
                                    ("/admin/v1/est/registrations", 401, True),
                                    ("/admin/v1/scep/challenges", 401, True),
                                    ("/admin/v1/scep/challenges", 413, True),
                                    ("/admin/v1/revocations", 422, False),
                                    (f"/admin/v1/no-such-{tag}", 404, True),
                                    (f"/admin/v1/est/registrations/surface-{tag}", 404, False),
                                    ("/admin/v1/est/registrations", 201, False)):
        assert (path, status, anonymous) in calls, (path, status)


def test_an_unexpected_error_is_a_500_problem_and_audited(deployment):  # type: ignore[no-untyped-def]
    """The gate answers and audits what a route did not handle (defect 21.10: 500s were not audited).
    The real store, audit log and authenticator; only the failing route is made up."""
    token = f"gate-{os.urandom(6).hex()}"
    deployment.store.add_admin_token(token[:20], "viewer", token, deployment.clock.now())
    app = FastAPI()
    app.state.admin_auth = AdminAuthenticator(deployment.store, deployment.clock, {})
    install_problem_handlers(app)
    path = f"/admin/v1/boom-{os.urandom(3).hex()}"

    @app.get(path)
    def boom(p: Viewer) -> None:
        raise RuntimeError("secret internals")

    gate = AdminGate(app, deployment.store, deployment.audit, deployment.clock, 1024)

    async def call() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=gate, client=("192.0.2.7", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="https://admin.test") as client:
            return [await client.get(path, headers={"authorization": f"Bearer {token}"}),
                    await client.post(path, content=b"x" * 2048)]

    failed, too_big = anyio.run(call)
    assert failed.status_code == 500 and failed.headers["content-type"] == "application/problem+json"
    assert "secret" not in failed.text and failed.json()["status"] == 500
    assert too_big.status_code == 413 and too_big.headers["content-type"] == "application/problem+json"
    lines = [json.loads(x) for x in deployment.audit.path.read_text().splitlines()]
    calls = {(a["path"], a["status"], a["actor"], a["source"]) for a in lines if a["action"] == "admin-api"}
    assert (path, 500, token[:20], "192.0.2.7") in calls and (path, 413, "anonymous", "192.0.2.7") in calls


def test_admin_certificate_role_is_pinned_to_profile_and_store_record(deployment):  # type: ignore[no-untyped-def]
    """cert_roles maps profile + subject: a certificate of another profile with the mapped subject,
    and a certificate this CA has no record of, get no role (fail closed)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.csr import parse_csr
    from ca.model import IssuanceRequest, Requester

    tag = os.urandom(3).hex()
    subject = f"CN=pinned-admin-{tag}"

    def issue(profile: str, san: x509.GeneralName) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(subject))
               .add_extension(x509.SubjectAlternativeName([san]), critical=False).sign(key, hashes.SHA256()))
        request = parse_csr(csr.public_bytes(serialization.Encoding.PEM))
        issued = deployment.authority.issue(IssuanceRequest(request, profile, Requester("test", "admin-pin"),
                                                            subject_grants=tuple(request.subject)))
        return issued.certificate.public_bytes(serialization.Encoding.DER)

    user = issue("user", x509.RFC822Name(f"pin-{tag}@example.test"))
    machine = issue("machine", x509.DNSName(f"pin-{tag}.example.test"))
    key = ec.generate_private_key(ec.SECP256R1())
    now = deployment.clock.now()
    name = x509.Name.from_rfc4514_string(subject)
    foreign = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256())
               ).public_bytes(serialization.Encoding.DER)
    auth = AdminAuthenticator(deployment.store, deployment.clock, {"user": {subject: "admin"}})

    def principal(der: bytes) -> Any:
        return auth.authenticate(None, {"extensions": {"tls": {"client_cert_der": der}}}, "192.0.2.9")

    assert principal(user) is not None and principal(user).role == "admin"
    assert principal(machine) is None  # same subject, another profile
    assert principal(foreign) is None  # no store record of it


def test_token_and_gateway_changes_are_audited_with_details(deployment):  # type: ignore[no-untyped-def]
    """Creating/disabling an admin token and enabling/disabling a gateway each leave an audit row
    and a file line naming what changed (token name and role; gateway and enabled), written in the
    store transaction; the token value is never in them."""
    from sqlalchemy import select

    from ca.store.sql import AUDIT
    from enrollment.admin.routes import create_app

    tag = os.urandom(3).hex()
    token = f"auditor-{tag}"
    deployment.store.add_admin_token(token, "admin", token, deployment.clock.now())
    gw = f"gw-audit-{tag}"
    deployment.store.add_gateway(gw, "webhook", "https://gw.example.test/push", deployment.clock.now())
    gate = create_app(deployment)

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=gate, client=("192.0.2.5", 4711))
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=transport, base_url="https://admin.test/admin/v1",
                                     headers=headers) as client:
            return [await client.post("/tokens", json={"name": f"new-{tag}", "role": "viewer"}),
                    await client.delete(f"/tokens/new-{tag}"),
                    await client.patch(f"/gateways/{gw}", json={"enabled": False})]

    created, disabled, patched = anyio.run(calls)
    assert (created.status_code, disabled.status_code, patched.status_code) == (201, 204, 200)
    with deployment.db.read() as conn:
        rows = [(r.action, json.loads(r.detail)) for r in conn.execute(select(AUDIT).where(
            AUDIT.c.actor == token, AUDIT.c.action.in_(["admin-token-create", "admin-token-disable",
                                                        "gateway-disable"])))]
    assert ("admin-token-create", {"token": f"new-{tag}", "role": "viewer"}) in rows
    assert ("admin-token-disable", {"token": f"new-{tag}"}) in rows
    assert ("gateway-disable", {"gateway": gw, "enabled": False}) in rows
    lines = [json.loads(x) for x in deployment.audit.path.read_text().splitlines()]
    mine = {(a["action"], a.get("token"), a.get("role"), a.get("gateway")) for a in lines if a["actor"] == token}
    assert {("admin-token-create", f"new-{tag}", "viewer", None), ("admin-token-disable", f"new-{tag}", None, None),
            ("gateway-disable", None, None, gw)} <= mine
    assert created.json()["token"] not in deployment.audit.path.read_text()


def test_incident_id_out_of_range_is_a_client_error(deployment):  # type: ignore[no-untyped-def]
    """/incidents/{id} bounds the id to the database's integer range: 422, never a 500."""
    from enrollment.admin.routes import create_app

    token = f"inc-range-{os.urandom(3).hex()}"
    deployment.store.add_admin_token(token, "admin", token, deployment.clock.now())
    gate = create_app(deployment)

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=gate, client=("192.0.2.6", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="https://admin.test/admin/v1",
                                     headers={"authorization": f"Bearer {token}"}) as client:
            return [(await client.get(f"/incidents/{n}")).status_code for n in (2**63, 10**30, 0, -1)] + [
                (await client.post(f"/incidents/{2**64}/approve")).status_code,
                (await client.get(f"/incidents/{2**63 - 1}")).status_code]

    assert anyio.run(calls) == [422, 422, 422, 422, 422, 404]


def test_serials_file_is_read_no_further_than_the_limit(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A bulk serials file over MAX_FILE_BYTES is refused after reading at most MAX+1 bytes: a
    FIFO fed by a writer shows how much was consumed (the whole 4 MiB before the fix)."""
    import threading

    import ca.revocation as revocation

    monkeypatch.setattr(revocation, "MAX_FILE_BYTES", 1024)
    fifo = tmp_path / "serials.fifo"
    os.mkfifo(fifo)
    written = [0]

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb", buffering=0) as w:
            for _ in range(4 * 1024):
                written[0] += w.write(b"0a\n" * 341 + b"\n")  # 1 KiB of serial lines

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        with pytest.raises(PKIError) as err:
            read_serials_file(fifo)
        writer.join(30)  # the reader closed the pipe: the writer's next write fails (EPIPE)
        consumed = written[0]
    finally:
        if writer.is_alive():  # unblock the writer whatever happened
            with open(fifo, "rb") as drain:
                while drain.read(65536):
                    pass
            writer.join(30)
    assert err.value.kind is ErrorKind.BAD_REQUEST and "larger than 1024" in err.value.detail
    assert consumed < 1024 * 1024  # what the pipe buffer took after the reader stopped, not 4 MiB


def test_remote_commands_share_one_admin_client_and_its_errors(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``revoke``, ``unhold`` and ``incidents`` reach the admin API through one client: the same
    one-line error and exit code for --server without --token (2), a token file that is not a token
    (2) and a server that does not answer (6)."""
    import socket

    from tests.conftest import run_ikepki

    monkeypatch.delenv("IKEPKI_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.delenv("IKEPKI_SERVER", raising=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{s.getsockname()[1]}"
    good, bad = tmp_path / "token", tmp_path / "bad-token"
    good.write_text("a-token-nobody-issued\n")
    bad.write_text("two words\n")
    commands = (["revoke", "ffff01", "--reason", "keyCompromise", "--yes"], ["unhold", "ffff01"],
                ["incidents", "list"], ["incidents", "approve", "1"])
    for command in commands:
        cases = (([], EXIT[ErrorKind.CONFIG], "--server needs --token FILE"),
                 (["--token", str(bad)], EXIT[ErrorKind.CONFIG], "not an admin API token"),
                 (["--token", str(good)], EXIT[ErrorKind.UNAVAILABLE], "admin API unreachable"))
        for extra, code, message in cases:
            proc = run_ikepki(*command, "--server", dead, *extra, check=False)
            assert proc.returncode == code, (command, extra, proc.stdout, proc.stderr)
            assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
