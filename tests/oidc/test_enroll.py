"""Users from the identity provider, against the real npm ``oidc-provider``: the device grant
with its HTML forms, ``POST /user/v1/certificates`` through ``ikepki serve``, refusals that
change nothing, back-channel logout from the provider holding the user's certificates, and
``revoke --user``."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import IKEPKI
from tests.oidc.conftest import OidcRig
from tests.oidc.oidc_idp import Browser

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def csr_pem(cn: str = "whatever", san: str | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admins")]))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(san)]), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [f"{type(n).__name__}:{n.value}" for n in ext]


def ous(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]


def user_certs(rig: OidcRig) -> int:
    with rig.admin() as admin:
        return len(admin.get("/certificates", params={"profile": "user", "limit": 1000}).json()["items"])


def cli_enroll(rig: OidcRig, login: str, out: Path, device: str = "laptop-7", *extra: str
               ) -> tuple[dict[str, Any], Browser]:
    """``ikepki user enroll`` as a subprocess; the person signs in with the browser at the URL it shows."""
    proc = subprocess.Popen([IKEPKI, "user", "enroll", "--server", rig.server.https_url, "--idp", "corp", "--out",
                             str(out), "--ca-bundle", str(rig.dir / "root-ca.pem"), "--device", device, "--json",
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    shown = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "user_code=" not in shown:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        shown += line
    m = re.search(r"(http://\S+user_code=\S+)", shown)
    assert m, f"no verification URL shown:\n{shown}{proc.communicate()}"
    assert re.search(r"enter the code [A-Z]{4}-[A-Z]{4}", shown), shown  # RFC 8628 §3.3: URL + user code
    browser = Browser()
    page = browser.sign_in(m.group(1), login)
    assert "Sign-in Success" in page.text, page.text[-500:]
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    return json.loads(stdout), browser


def test_cli_device_grant_issues_a_user_certificate(rig: OidcRig, tmp_path: Path) -> None:
    out = tmp_path / "alice"
    state, _ = cli_enroll(rig, "alice", out)

    key_file = out / "key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert cert.public_key() == key.public_key()
    identity = f"{rig.idp.issuer}#alice"
    assert sans(cert) == ["RFC822Name:alice@example.test", f"UniformResourceIdentifier:{identity}"]
    assert ous(cert) == ["staff"]  # vpn-staff -> staff; "everyone" maps to nothing
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(hours=8, minutes=1)
    assert state["serial"] == format(cert.serial_number, "x") and state["identity"] == identity
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(rig.dir / "root-ca.pem"), "-untrusted",
                               str(out / "chain.pem"), str(out / "cert.pem")], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    listed = json.loads(rig.ikepki("certs", "list", "--user", "alice@example.test", "--json").stdout)
    mine = [c for c in listed if c["serial"] == state["serial"]]
    assert mine and mine[0]["user"]["groups"] == ["vpn-staff", "everyone"] and mine[0]["user"]["device"] == "laptop-7"
    with rig.admin() as admin:
        rows = admin.get("/users/certificates", params={"user": identity}).json()
    assert [r["serial"] for r in rows] == [state["serial"]]
    assert rows[0]["user"]["roles"] == ["staff"] and rows[0]["user"]["issuer"] == rig.idp.issuer

    renew = subprocess.run([IKEPKI, "user", "renew", "--out", str(out), "--json"], capture_output=True, text=True)
    assert renew.returncode == 0 and json.loads(renew.stdout)["renewed"] is False, renew.stderr


def post(rig: OidcRig, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> Any:
    with rig.api() as api:
        if raw is not None:
            return api.post("/user/v1/certificates", content=raw, headers=headers or {})
        return api.post("/user/v1/certificates", json=body, headers=headers or {})


def problem(resp: Any, status: int, match: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json", resp.headers
    assert re.search(match, resp.json()["detail"]), resp.json()


def test_refusals_change_nothing_and_a_token_is_redeemed_once(rig: OidcRig) -> None:
    token = rig.idp.id_token("bob")
    before = user_certs(rig)
    problem(post(rig, {"id_token": token, "csr": csr_pem(), "provider": "retired"}), 403, "disabled")
    problem(post(rig, {"id_token": token, "csr": "not a csr"}), 400, "CSR")
    problem(post(rig, {"id_token": token, "csr": csr_pem(), "extra": 1}), 400, "unknown")
    problem(post(rig, None, {"content-type": "text/plain"}, b"{}"), 415, "Content-Type")
    problem(post(rig, None, {"content-type": "application/json"}, b"x" * 100_000), 413, "over")
    head, body, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    import base64

    forged = base64.urlsafe_b64encode(json.dumps({**claims, "groups": ["vpn-staff"]}).encode()).rstrip(b"=").decode()
    problem(post(rig, {"id_token": f"{head}.{forged}.{sig}", "csr": csr_pem()}), 401, "signature")
    none_head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    resp = post(rig, {"id_token": f"{none_head}.{body}.", "csr": csr_pem()})
    problem(resp, 401, "alg none")
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]
    assert user_certs(rig) == before  # nothing issued, and the token is still unused

    ok = post(rig, {"id_token": token, "csr": csr_pem(cn="root", san="ceo@example.test")})
    assert ok.status_code == 201, ok.text
    cert = x509.load_pem_x509_certificate(ok.json()["certificate"].encode())
    # every name comes from the token and the CA's mapping, none from the CSR
    assert sans(cert) == ["RFC822Name:bob@example.test", f"UniformResourceIdentifier:{rig.idp.issuer}#bob"]
    assert ous(cert) == ["contractors"] and cert.subject.rfc4514_string() == "OU=contractors,CN=bob@example.test"
    problem(post(rig, {"id_token": token, "csr": csr_pem()}), 401, "already redeemed")
    assert user_certs(rig) == before + 1

    # the token as a bearer credential (RFC 6750 §2.1); carol's email is not verified: no email SAN
    carol = rig.idp.id_token("carol")
    ok = post(rig, {"csr": csr_pem()}, {"authorization": f"Bearer {carol}"})
    assert ok.status_code == 201, ok.text
    cert = x509.load_pem_x509_certificate(ok.json()["certificate"].encode())
    assert sans(cert) == [f"UniformResourceIdentifier:{rig.idp.issuer}#carol"] and ous(cert) == ["staff"]
    assert user_certs(rig) == before + 2


def wait_for(predicate: Any, timeout: float, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    return predicate()


def status(rig: OidcRig, serial: str) -> str:
    with rig.admin() as admin:
        return str(admin.get(f"/certificates/{serial}").json()["status"])


def test_backchannel_logout_holds_then_revoke_user(rig: OidcRig, capsys: pytest.CaptureFixture[str]) -> None:
    browser = Browser()
    code = rig.idp.device_code()
    browser.sign_in(code["verification_uri_complete"], "dave")
    tokens = rig.idp.token(code["device_code"])
    enrolled = post(rig, {"id_token": tokens["id_token"], "csr": csr_pem()})
    assert enrolled.status_code == 201, enrolled.text
    serial = enrolled.json()["serial"]
    assert enrolled.json()["roles"] == []  # "everyone" grants no role
    other = post(rig, {"id_token": rig.idp.id_token("alice"), "csr": csr_pem()}).json()["serial"]

    # a logout token we forge (unknown key) is refused with 400 and changes nothing (§2.8)
    forged = jwt.encode({"iss": rig.idp.issuer, "aud": "ikepki-vpn", "iat": int(time.time()), "jti": "x",
                         "sub": "dave", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}},
                        ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "ec-1"})
    with rig.api() as api:
        resp = api.post("/user/v1/backchannel-logout/corp", data={"logout_token": forged})
    assert resp.status_code == 400 and "signature" in resp.json()["detail"], resp.text
    assert status(rig, serial) == "valid"

    started = time.monotonic()
    page = browser.log_out(rig.idp.issuer)  # the person signs out at the provider
    assert page.status_code == 200, page.text[-500:]
    assert wait_for(lambda: status(rig, serial) == "hold", 10), "".join(rig.idp.output[-20:])
    elapsed = time.monotonic() - started
    assert status(rig, other) == "valid"  # another user's certificate is untouched
    with capsys.disabled():
        print(f"\n[oidc] sign-out at the provider -> certificate on hold: {elapsed * 1000:.0f} ms")

    identity = f"{rig.idp.issuer}#dave"
    result = json.loads(rig.ikepki("revoke", "--user", identity, "--reason", "affiliationChanged", "--yes",
                                   "--json").stdout)
    assert result["revoked"] == [serial], result
    assert status(rig, serial) == "revoked"
    dry = rig.ikepki("revoke", "--user", "nobody@example.test", "--reason", "affiliationChanged", "--json",
                     check=False)
    assert json.loads(dry.stdout)["targets"] == [], dry.stdout


def test_est_simpleenroll_accepts_the_id_token_as_bearer(rig: OidcRig, tmp_path: Path) -> None:
    """curl + openssl as the EST client (RFC 7030 §4.2.1 base64 PKCS#10 in, §4.2.3 certs-only out)."""
    import base64

    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "mdm")])).sign(key, hashes.SHA256())
    (tmp_path / "csr.b64").write_bytes(base64.encodebytes(csr.public_bytes(serialization.Encoding.DER)))
    token = rig.idp.id_token("alice")

    def curl(tok: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "--cacert", str(rig.dir / "root-ca.pem"), "-o", str(tmp_path / "out"),
                               "-w", "%{http_code}", "-H", f"Authorization: Bearer {tok}",
                               "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{tmp_path / 'csr.b64'}",
                               f"{rig.server.https_url}/.well-known/est/user/simpleenroll"],
                              capture_output=True, text=True, timeout=60)

    assert curl(token).stdout == "200", (tmp_path / "out").read_text()
    der = base64.b64decode((tmp_path / "out").read_bytes())
    (tmp_path / "p7.der").write_bytes(der)
    printed = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-in", str(tmp_path / "p7.der"), "-print_certs"],
                             capture_output=True, text=True, check=True).stdout
    cert = x509.load_pem_x509_certificate(printed.encode())
    assert cert.public_key() == key.public_key()
    assert sans(cert) == ["RFC822Name:alice@example.test", f"UniformResourceIdentifier:{rig.idp.issuer}#alice"]
    assert curl(token).stdout == "401"  # redeemed once, whichever door it came through
    assert "already redeemed" in (tmp_path / "out").read_text()


def test_cli_keeps_the_key_in_the_tpm(rig: OidcRig, tmp_path: Path) -> None:
    """``--tpm``: the key is created in a (sw)TPM and never written to a file."""
    from device_helpers import running_swtpm

    from enrollment.attestation.device import TpmDevice
    from enrollment.oidc.cli import USER_KEY_HANDLE

    out = tmp_path / "tpm-user"
    with running_swtpm() as tpm:
        state, _ = cli_enroll(rig, "alice", out, "tpm-laptop", "--tpm", tpm.tcti)
        with TpmDevice(tpm.tcti) as dev:
            tpm_public = dev.device_private_key(USER_KEY_HANDLE).public_key()
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert cert.public_key() == tpm_public
    assert not (out / "key.pem").exists() and state["key"] is None
    assert state["tpm"] == {"tcti": tpm.tcti, "handle": hex(USER_KEY_HANDLE)}
