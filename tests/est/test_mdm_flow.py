"""The MDM flow end to end over HTTPS: bulk pre-authorisation, one-time secrets, RA mode,
pipelines, manual approval, the trusted ingress header."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import run_ikepki
from tests.est.conftest import PIPELINE_PASSWORD, PROXY_HEADER, STRICT_PASSWORD, EstEnv, load_pem_cert
from tests.est.est_helpers import enroll, issued_cert, make_csr, new_key, san_values

INTUNE = ("intune", PIPELINE_PASSWORD)


def test_register_100_devices_in_one_call_and_enroll_each(est: EstEnv) -> None:
    devices = [{"device_id": f"fleet-{i:03d}", "profile": "machine", "sans": [f"DNS:fleet-{i:03d}.example.test"]}
               for i in range(100)]
    secrets = est.register(devices)
    assert len(secrets) == 100 and len(set(secrets.values())) == 100
    before = est.store.cert_count()
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(device: str) -> tuple[str, x509.Certificate]:
        if not hasattr(local, "client"):
            local.client = est.client()
            clients.append(local.client)
        csr = make_csr(new_key(), device, [f"DNS:{device}.example.test"])
        return device, issued_cert(enroll(local.client, est.url, csr, auth=(device, secrets[device])))

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, secrets))
    finally:
        for c in clients:
            c.close()
    assert est.store.cert_count() == before + 100
    for device, cert in results:
        assert san_values(cert) == {f"{device}.example.test"}
        assert est.store.device_of(cert.serial_number) == device
        assert est.store.registration(device) == (1, format(cert.serial_number, "x"))

    # a used secret is refused and issues nothing
    with est.client() as c:
        r = enroll(c, est.url, make_csr(new_key(), "fleet-000", ["DNS:fleet-000.example.test"]),
                   auth=("fleet-000", secrets["fleet-000"]))
    assert r.status_code == 403 and "already" in r.text
    assert est.store.cert_count() == before + 100


def test_san_outside_registration_is_refused_and_secret_kept(est: EstEnv) -> None:
    secret = est.register_one("mdm-san-1", ["DNS:mdm-san-1.example.test", "DNS:alt.mdm-san-1.example.test"])
    before = est.store.cert_count()
    with est.client() as c:
        r = enroll(c, est.url, make_csr(new_key(), "mdm-san-1", ["DNS:mdm-san-1.example.test",
                                                                  "DNS:evil.example.test"]),
                   auth=("mdm-san-1", secret))
        assert r.status_code == 403 and "DNS:evil.example.test" in r.text
        assert est.store.cert_count() == before and est.store.registration("mdm-san-1") == (0, None)
        r = enroll(c, est.url, make_csr(new_key(), "mdm-san-1", ["DNS:mdm-san-1.example.test"]), label="user",
                   auth=("mdm-san-1", secret))
        assert r.status_code == 403 and "profile" in r.text  # registered for machine, not user
        # a subset of the registered names is fine; no SAN in the CSR means all registered names
        cert = issued_cert(enroll(c, est.url, make_csr(new_key(), "mdm-san-1"), auth=("mdm-san-1", secret)))
    assert san_values(cert) == {"mdm-san-1.example.test", "alt.mdm-san-1.example.test"}


def test_concurrent_double_use_exactly_one_succeeds(est: EstEnv) -> None:
    devices = [f"race-{i}" for i in range(6)]
    secrets = est.register([{"device_id": d, "profile": "machine", "sans": [f"DNS:{d}.example.test"]}
                            for d in devices])
    before = est.store.cert_count()
    for device in devices:
        barrier = threading.Barrier(2)
        csrs = [make_csr(new_key(), device, [f"DNS:{device}.example.test"]) for _ in range(2)]
        clients = [est.client(), est.client()]
        for c in clients:  # connect first so that both requests really race
            c.get(f"{est.url}/.well-known/est/cacerts")

        def go(i: int, clients: list[httpx.Client] = clients, csrs: list[bytes] = csrs,
               barrier: threading.Barrier = barrier, device: str = device) -> int:
            barrier.wait()
            return enroll(clients[i], est.url, csrs[i], auth=(device, secrets[device])).status_code

        with ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(go, range(2)))
        for c in clients:
            c.close()
        assert codes == [200, 403], (device, codes)
    assert est.store.cert_count() == before + len(devices)


def test_blocked_device_is_refused_and_secret_not_consumed(est: EstEnv) -> None:
    secret = est.register_one("mdm-blocked", ["DNS:mdm-blocked.example.test"])
    with est.client() as c:
        r = c.post(f"{est.url}/admin/v1/devices/mdm-blocked/block", json={"reason": "lost"},
                   headers=est.admin_headers())
        assert r.status_code == 200, r.text
        before = est.store.cert_count()
        csr = make_csr(new_key(), "mdm-blocked", ["DNS:mdm-blocked.example.test"])
        r = enroll(c, est.url, csr, auth=("mdm-blocked", secret))
        assert r.status_code == 403 and "blocked" in r.text
        assert est.store.cert_count() == before
        assert est.store.registration("mdm-blocked") == (0, None)  # issuance refused: claim released
        r = c.delete(f"{est.url}/admin/v1/devices/mdm-blocked/block", headers=est.admin_headers())
        assert r.status_code == 200, r.text
        issued_cert(enroll(c, est.url, csr, auth=("mdm-blocked", secret)))


def test_cli_register_prints_secret_for_enrollment(est: EstEnv) -> None:
    data = est.cli_registration  # `ikepki est register … --json`, run while the servers started
    assert data is not None
    assert data["device_id"] == "cli-dev-1" and len(data["secret"]) >= 32
    with est.client() as c:
        cert = issued_cert(enroll(c, est.url, make_csr(new_key(), "cli-dev-1", ["DNS:cli-dev-1.example.test"]),
                                  auth=("cli-dev-1", data["secret"])))
        r = c.get(f"{est.url}/admin/v1/est/registrations/cli-dev-1", headers=est.admin_headers())
    assert r.status_code == 200
    reg = r.json()
    assert reg["used"] is True and reg["serial"] == format(cert.serial_number, "x")
    assert "secret" not in reg and reg["sans"] == ["DNS:cli-dev-1.example.test", "IP:192.0.2.10"]
    with est.client() as c:
        r = c.get(f"{est.url}/admin/v1/certificates/{format(cert.serial_number, 'x')}", headers=est.admin_headers())
    assert r.status_code == 200 and r.json().get("ek_fingerprint") == "ab" * 32


def test_expired_registration_is_refused(est: EstEnv) -> None:
    secrets = est.register([{"device_id": "mdm-exp", "profile": "machine", "sans": ["DNS:mdm-exp.example.test"],
                             "expires_hours": 0.0003}])
    time.sleep(1.3)
    with est.client() as c:
        r = enroll(c, est.url, make_csr(new_key(), "mdm-exp", ["DNS:mdm-exp.example.test"]),
                   auth=("mdm-exp", secrets["mdm-exp"]))
    assert r.status_code == 403 and "expired" in r.text


def test_admin_api_requires_admin_token(est: EstEnv) -> None:
    body = {"devices": [{"device_id": "nope", "profile": "machine", "sans": ["DNS:nope.example.test"]}]}
    with est.client() as c:
        r = c.post(f"{est.url}/admin/v1/est/registrations", json=body)
        assert r.status_code == 401
        r = c.post(f"{est.url}/admin/v1/est/registrations", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = c.post(f"{est.url}/admin/v1/est/registrations", headers=est.admin_headers(),
                   json={"devices": [{"device_id": "x", "profile": "tls-server", "sans": ["DNS:x.example.test"]}]})
        assert r.status_code == 400 and "profile" in r.text
        r = c.post(f"{est.url}/admin/v1/est/registrations", headers=est.admin_headers(),
                   json={"devices": [{"device_id": "a:b", "profile": "machine", "sans": ["DNS:x.example.test"]}]})
        assert r.status_code == 400
    assert est.store.registration("nope") is None


def test_ra_enrolls_for_registered_devices_only(est: EstEnv) -> None:
    est.register([{"device_id": "ra-dev-1", "profile": "machine", "sans": ["DNS:ra-dev-1.example.test"]}])
    ra = (str(est.ra_cert), str(est.ra_key))
    before = est.store.cert_count()
    with est.client(cert=ra) as c:
        r = enroll(c, est.url, make_csr(new_key(), "unregistered-dev", ["DNS:unregistered.example.test"]))
        assert r.status_code == 403 and "registration" in r.text
        r = enroll(c, est.url, make_csr(new_key(), "ra-dev-1", ["DNS:other.example.test"]))
        assert r.status_code == 403
        assert est.store.cert_count() == before
        cert = issued_cert(enroll(c, est.url, make_csr(new_key(), "ra-dev-1", ["DNS:ra-dev-1.example.test"])))
        assert est.store.device_of(cert.serial_number) == "ra-dev-1"
        r = enroll(c, est.url, make_csr(new_key(), "ra-dev-1", ["DNS:ra-dev-1.example.test"]))
        assert r.status_code == 403  # the registration was consumed
    # an ordinary client certificate is not an RA: it may only renew itself
    with est.client(cert=ra) as c:
        r = c.get(f"{est.url}/.well-known/est/cacerts")
    assert r.status_code == 200


def test_nobody_enrolls_an_ra_subject(est: EstEnv) -> None:
    """Otherwise a device (or pipeline) could mint itself an RA certificate."""
    secret = est.register_one("ra-wannabe", ["DNS:ra-wannabe.example.test"])
    before = est.store.cert_count()
    with est.client() as c:
        for auth in (("ra-wannabe", secret), INTUNE):
            r = enroll(c, est.url, make_csr(new_key(), "mdm-ra", ["DNS:ra-wannabe.example.test"]), auth=auth)
            assert r.status_code == 403 and "reserved" in r.text
        r = c.post(f"{est.url}/admin/v1/est/registrations", headers=est.admin_headers(),
                   json={"devices": [{"device_id": "intune", "profile": "machine", "sans": ["DNS:x.example.test"]}]})
        assert r.status_code == 400 and "pipeline" in r.text
    assert est.store.cert_count() == before
    assert est.store.registration("ra-wannabe") == (0, None)


def test_pipelines_basic_auth(est: EstEnv) -> None:
    with est.client() as c:
        cert = issued_cert(enroll(c, est.url, make_csr(new_key(), "gw1", ["DNS:gw1.example.test"]), label="gateway",
                                  auth=INTUNE))
        assert san_values(cert) == {"gw1.example.test"}
        r = enroll(c, est.url, make_csr(new_key(), "gw1", ["DNS:gw1.example.test"]), auth=("intune", "wrong"))
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="ikepki EST"'
        r = enroll(c, est.url, make_csr(new_key(), "c1", ["DNS:c1.example.test"]), label="certonly", auth=INTUNE)
        assert r.status_code == 403  # the label accepts client certificates only
        r = enroll(c, est.url, make_csr(new_key(), "c2", ["DNS:c2.example.test"]), label="otherteam", auth=INTUNE)
        assert r.status_code == 403 and "may not use label" in r.text
        # the strict pipeline may only enroll registered devices
        r = enroll(c, est.url, make_csr(new_key(), "free", ["DNS:free.example.test"]),
                   auth=("strict", STRICT_PASSWORD))
        assert r.status_code == 403
        est.register_one("strict-dev", ["DNS:strict-dev.example.test"])
        cert = issued_cert(enroll(c, est.url, make_csr(new_key(), "strict-dev", ["DNS:strict-dev.example.test"]),
                                  auth=("strict", STRICT_PASSWORD)))
        assert est.store.device_of(cert.serial_number) == "strict-dev"


def test_manual_approval_202_then_approve_or_reject(est: EstEnv) -> None:
    with est.client() as c:
        csr = make_csr(new_key(), "held-1", ["DNS:held-1.example.test"])
        r = enroll(c, est.url, csr, label="approval", auth=INTUNE)
        assert r.status_code == 202 and r.headers["retry-after"] == "1"
        pending = [p for p in est.pending() if p["subject"] == "CN=held-1,O=Example"]
        assert len(pending) == 1
        assert enroll(c, est.url, csr, label="approval", auth=INTUNE).status_code == 202  # same request, same entry
        est.decide(str(pending[0]["id"]))
        first = issued_cert(enroll(c, est.url, csr, label="approval", auth=INTUNE))
        again = issued_cert(enroll(c, est.url, csr, label="approval", auth=INTUNE))
        assert again.serial_number == first.serial_number  # a late retry gets the same certificate

        csr2 = make_csr(new_key(), "held-2", ["DNS:held-2.example.test"])
        assert enroll(c, est.url, csr2, label="approval", auth=INTUNE).status_code == 202
        (p2,) = [p for p in est.pending() if p["subject"] == "CN=held-2,O=Example"]
        est.decide(str(p2["id"]), "reject")
        r = enroll(c, est.url, csr2, label="approval", auth=INTUNE)
        assert r.status_code == 403 and "rejected" in r.text


def test_trusted_proxy_header_only_when_configured(est: EstEnv, tmp_path: Path) -> None:
    cert_path, _ = est.issue(tmp_path, "proxied-1", "proxied-1.example.test")
    pem = load_pem_cert(cert_path).public_bytes(Encoding.PEM).decode()
    header = {PROXY_HEADER: urllib.parse.quote(pem)}
    csr = make_csr(new_key(), "proxied-1", ["DNS:proxied-1.example.test"])
    with est.client() as c:
        r = enroll(c, est.url, csr, op="simplereenroll", headers=header)
        assert r.status_code == 401  # not configured on this listener: the header is ignored
        cert = issued_cert(enroll(c, est.proxied.https_url, csr, op="simplereenroll", label="machine",
                                  headers=header))
        assert cert.subject.rfc4514_string() == "CN=proxied-1,O=Example"
        bad = {PROXY_HEADER: urllib.parse.quote(base64.b64encode(b"not a cert").decode())}
        r = enroll(c, est.proxied.https_url, csr, op="simplereenroll", label="machine", headers=bad)
        assert r.status_code == 400


def test_cli_approve_releases_a_held_device_enrollment(est: EstEnv) -> None:
    """`ikepki est approve ID` (the operator's CLI); the device's secret is consumed only at issuance."""
    secret = est.register_one("held-dev", ["DNS:held-dev.example.test"])
    csr = make_csr(new_key(), "held-dev", ["DNS:held-dev.example.test"])
    with est.client() as c:
        r = enroll(c, est.url, csr, label="approval", auth=("held-dev", secret))
        assert r.status_code == 202 and int(r.headers["retry-after"]) >= 1
        assert est.store.registration("held-dev") == (0, None)
        (pending,) = [p for p in est.pending() if p["principal"] == "device:held-dev"]
        out = run_ikepki("est", "approve", str(pending["id"]), "--json", "--config", str(est.config),
                         directory=est.dir).stdout
        assert json.loads(out)["status"] == "approved"
        cert = issued_cert(enroll(c, est.url, csr, label="approval", auth=("held-dev", secret)))
    assert est.store.registration("held-dev") == (1, format(cert.serial_number, "x"))
    assert est.store.device_of(cert.serial_number) == "held-dev"


def test_device_cannot_choose_a_role_attribute(est: EstEnv) -> None:
    """Issue 21 defect 1: a device with a one-time secret asked for ``OU=vpn-admin`` and got it (the
    responder's ``role_attribute: OU`` then matched an admin rule). The profile allows CN and
    O=Example only, so OU is dropped and O=Evil too."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    secret = est.register_one("role-dev-1", ["DNS:role-dev-1.example.test"])
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "vpn-admin"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "role-dev-1")])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("role-dev-1.example.test")]), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))
    with est.client() as c:
        cert = issued_cert(enroll(c, est.url, csr, auth=("role-dev-1", secret)))
    assert cert.subject.rfc4514_string() == "CN=role-dev-1,O=Example"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME) == []
