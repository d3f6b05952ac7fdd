"""Issue 21 defect 8, fault injection: the SoftHSM token directory disappears for a few seconds
under a running ``ikepki serve``, then comes back. (The tests run as root, for whom ``chmod 000``
does not make a directory unreadable, so the directory is renamed away and back instead.)

While it is gone: OCSP answers tryLater, EST enrollment 503, /readyz fails, and /healthz (liveness) fails once the
configured window (2 s here) has passed. Once it is back: the server re-opens its PKCS#11 session
by itself (no restart), issues certificates (EST) and signs OCSP responses again, and /readyz and /healthz recover."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.conftest import Server, start_server
from tests.est.est_helpers import enroll, issued_cert, make_csr, new_key


def _ocsp_status(client: httpx.Client, url: str, issuer: x509.Certificate) -> ocsp.OCSPResponseStatus:
    name_hash = hashes.Hash(hashes.SHA1())
    name_hash.update(issuer.subject.public_bytes())
    key_hash = hashes.Hash(hashes.SHA1())
    key_hash.update(issuer.public_key().public_bytes(serialization.Encoding.X962,
                                                     serialization.PublicFormat.UncompressedPoint))
    req = (ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash.finalize(), key_hash.finalize(),
                                                             int.from_bytes(os.urandom(15), "big") | 1, hashes.SHA1())
           .add_extension(x509.OCSPNonce(os.urandom(16)), critical=False).build())  # nonce: signed now
    r = client.post(f"{url}/ocsp", content=req.public_bytes(serialization.Encoding.DER),
                    headers={"Content-Type": "application/ocsp-request"})
    assert r.status_code == 200
    return ocsp.load_der_ocsp_response(r.content).response_status


def _est_secrets(server: Server, client: httpx.Client, *devices: str) -> dict[str, str]:
    body = {"devices": [{"device_id": d, "profile": "machine", "sans": [f"DNS:{d}.example.test"]} for d in devices]}
    r = client.post(f"{server.https_url}/admin/v1/est/registrations", json=body,
                    headers={"Authorization": f"Bearer {server.admin_token()}"})
    assert r.status_code == 201, r.text
    return {x["device_id"]: x["secret"] for x in r.json()["registrations"]}


def _est_enroll(server: Server, client: httpx.Client, device: str, secret: str) -> httpx.Response:
    csr = make_csr(new_key(), device, [f"DNS:{device}.example.test"])
    return enroll(client, server.https_url, csr, auth=(device, secret))


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_hsm_loss_and_recovery_without_restart(fresh_dir: Path) -> None:
    server = start_server(fresh_dir, env={"IKEPKI_HSM_UNHEALTHY_AFTER_SECONDS": "2"})
    tokens = fresh_dir / "tokens"
    away = fresh_dir / "tokens.away"
    try:
        with httpx.Client(timeout=10, verify=ssl.create_default_context(cafile=server.root_pem)) as client:
            url = server.http_url
            secrets = _est_secrets(server, client, "hsm-during", "hsm-after")
            issuer = x509.load_der_x509_certificate(client.get(f"{url}/ca/ec.der").content)
            assert client.get(f"{url}/readyz").status_code == 200
            assert _ocsp_status(client, url, issuer) is ocsp.OCSPResponseStatus.SUCCESSFUL

            os.rename(tokens, away)
            try:
                assert _ocsp_status(client, url, issuer) is ocsp.OCSPResponseStatus.TRY_LATER
                assert _est_enroll(server, client, "hsm-during", secrets["hsm-during"]).status_code == 503
                assert client.get(f"{url}/readyz").status_code == 503
                # liveness turns bad only after the configured window, driven by /readyz probes
                assert _wait(lambda: client.get(f"{url}/readyz").status_code == 503
                             and client.get(f"{url}/healthz").status_code == 503, 10), "liveness never failed"
            finally:
                os.rename(away, tokens)

            assert _wait(lambda: client.get(f"{url}/readyz").status_code == 200, 20), "readiness never recovered"
            assert client.get(f"{url}/healthz").status_code == 200
            assert _ocsp_status(client, url, issuer) is ocsp.OCSPResponseStatus.SUCCESSFUL
            r = _est_enroll(server, client, "hsm-after", secrets["hsm-after"])
            assert r.status_code == 200, r.text
            assert issued_cert(r).issuer == issuer.subject
            assert server.process.poll() is None  # same process throughout
    except BaseException:
        print(server.log.read_text()[-4000:], f"exit status: {server.process.poll()}")
        raise
    finally:
        if away.exists() and not tokens.exists():
            os.rename(away, tokens)
        server.stop()
