"""`ikepki ocsp serve`: the OCSP + CRL mounts alone as their own process over the store, with its
background tasks (here: signer rotation forced by configuration, checked every second)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.x509 import ocsp
from sqlalchemy import select

from ocsp.signers import SIGNER_CERTS
from tests.conftest import IKEPKI, free_port
from tests.ocsp.ocsp_helpers import Pki, openssl, wait_for
from tests.ocsp.test_responder_core import request_for

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def ocsp_server(deployment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("ocsp-serve")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    env.update(IKEPKI_OCSP_SIGNER_ROTATE_BEFORE_HOURS="10000", IKEPKI_OCSP_SIGNER_CHECK_SECONDS="1")
    log = (tmp_path / "ocsp-serve.log").open("wb")
    proc = subprocess.Popen([IKEPKI, "ocsp", "serve", "--dir", str(deployment_dir), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "ocsp-serve.log").read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, what="ikepki ocsp serve")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_ocsp_serve_answers_and_rotates_its_signer(pki: Pki, ocsp_server: str) -> None:
    started = time.time()
    _, path = pki.issue()
    out = openssl("ocsp", "-issuer", pki.issuer_pem(), "-cert", path, "-url", f"{ocsp_server}/ocsp", "-CAfile",
                  pki.chain(), "-nonce")
    assert "Response verify OK" in out.stdout + out.stderr and f"{path}: good" in out.stdout
    assert httpx.get(f"{ocsp_server}/crl/ec.crl", timeout=30).status_code == 200
    assert httpx.get(f"{ocsp_server}/acme/directory", timeout=10).status_code == 404  # OCSP/CRL only

    def rotated_serial() -> str | None:
        with pki.dep.db.read() as conn:
            row = conn.execute(select(SIGNER_CERTS.c.serial, SIGNER_CERTS.c.created_at).where(
                SIGNER_CERTS.c.issuer_id == "ec").order_by(SIGNER_CERTS.c.id.desc()).limit(1)).first()
        return row.serial if row is not None and row.created_at.timestamp() >= started - 1 else None

    wait_for(rotated_serial, timeout=60, what="signer rotation")

    def signed_by_new_cert() -> bool:
        r = httpx.post(f"{ocsp_server}/ocsp", content=request_for(pki.dep, "ec", [12345], nonce=True),
                       headers={"Content-Type": "application/ocsp-request"}, timeout=10)
        return _rotated(pki, ocsp.load_der_ocsp_response(r.content))

    wait_for(signed_by_new_cert, timeout=60, what="responses signed with the rotated certificate")
    out = openssl("ocsp", "-issuer", pki.issuer_pem(), "-cert", path, "-url", f"{ocsp_server}/ocsp", "-CAfile",
                  pki.chain(), "-nonce")
    assert "Response verify OK" in out.stdout + out.stderr and f"{path}: good" in out.stdout


def _rotated(pki: Pki, resp: ocsp.OCSPResponse) -> bool:
    """Signed with a rotated certificate (one recorded in the table, not the seed from init)."""
    with pki.dep.db.read() as conn:
        serials = {r.serial for r in conn.execute(select(SIGNER_CERTS.c.serial).where(
            SIGNER_CERTS.c.issuer_id == "ec"))}
    return any(format(c.serial_number, "x") in serials for c in resp.certificates)


def test_two_responders_give_the_same_answer(pki: Pki, ocsp_server: str) -> None:
    """`ikepki serve` and `ikepki ocsp serve` over one store: same status, thisUpdate, nextUpdate,
    producedAt for the same nonce-less request (thisUpdate is bucketed; only the ECDSA signature
    differs). Retried if the two requests straddle a bucket boundary."""
    cert, _ = pki.issue()
    body = request_for(pki.dep, "ec", [cert.serial_number])

    def fields(url: str) -> tuple[object, ...]:
        r = httpx.post(f"{url}/ocsp", content=body, headers={"Content-Type": "application/ocsp-request"}, timeout=30)
        resp = ocsp.load_der_ocsp_response(r.content)
        return (resp.certificate_status, resp.this_update_utc, resp.next_update_utc, resp.produced_at_utc,
                resp.serial_number)

    for _ in range(3):
        a, b = fields(pki.url), fields(ocsp_server)
        if a == b:
            break
    assert a == b and a[0] is ocsp.OCSPCertStatus.GOOD
