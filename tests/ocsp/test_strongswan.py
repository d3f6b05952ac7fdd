"""strongSwan charon with `revocation = strict` against certificates issued by ikepki: the IKE SA
is accepted while the initiator's certificate is good and refused at IKE_AUTH once it is revoked,
once with OCSP only (revocation plugin enable_crl = no) and once with CRLs only (enable_ocsp = no).
Both gateways fetch from `ikepki ocsp serve` in their network namespace (strongswan.md §7)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from ca.model import RevocationReason
from tests.conftest import IKEPKI
from tests.ocsp.ocsp_helpers import Pki, fetch_crl, wait_for
from tests.ocsp.swan import Charon, Netns, client_conn, gateway_conn, require_lab
from tests.ocsp.swan import netns as new_netns
from tests.swan_harness import stop_process

pytestmark = pytest.mark.interop
GW_OCSP, GW_CRL, CLIENT = 15500, 16500, 25500


@dataclass
class Lab:
    netns: Netns
    gw_ocsp: Charon
    gw_crl: Charon
    client: Charon
    client_cert: x509.Certificate

    @property
    def client_serial(self) -> int:
        return self.client_cert.serial_number


def _in_netns_get(netns: Netns, url: str) -> int:
    proc = subprocess.run([*netns.wrap, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                          capture_output=True, text=True, timeout=10, check=False)
    return int(proc.stdout or 0)


@pytest.fixture(scope="module")
def lab(pki: Pki, deployment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_lab()
    assert pki.dep.issuers["ec"].urls.ocsp == "http://127.0.0.1:8080/ocsp", "session deployment base URL changed"
    state = tmp_path_factory.mktemp("swan")
    netns = new_netns()
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    server = subprocess.Popen([*netns.wrap, IKEPKI, "ocsp", "serve", "--dir", str(deployment_dir), "--host",
                               "127.0.0.1", "--port", "8080", "--no-workers"], env=env,
                              stdout=(state / "ocsp.log").open("wb"), stderr=subprocess.STDOUT)
    charons: list[Charon] = []
    try:
        wait_for(lambda: _in_netns_get(netns, "http://127.0.0.1:8080/healthz") == 200 or None, timeout=60,
                 what="ikepki ocsp serve in the namespace")
        gw_cert, gw_path = pki.issue("gw.ocsp.example.test", profile="gateway")
        cl_cert, cl_path = pki.issue(f"c{os.urandom(3).hex()}.ocsp.example.test")
        cas = {"root": pki.root_pem().read_bytes(), "ec": pki.issuer_pem().read_bytes()}

        def material(path: Path) -> tuple[bytes, bytes]:
            return path.read_bytes(), path.with_suffix(".key").read_bytes()

        client_id = cl_cert.subject.rfc4514_string().split("=", 1)[1]
        gw_ocsp = Charon(state / "gw-ocsp", netns, GW_OCSP, "enable_crl = no")
        gw_crl = Charon(state / "gw-crl", netns, GW_CRL, "enable_ocsp = no")
        client = Charon(state / "client", netns, CLIENT)
        gw_ocsp.configure(gateway_conn("rw", CLIENT), material(gw_path), cas)
        gw_crl.configure(gateway_conn("rw", CLIENT), material(gw_path), cas)
        client.configure(client_conn("to-ocsp", CLIENT, GW_OCSP, client_id)
                         + client_conn("to-crl", CLIENT, GW_CRL, client_id), material(cl_path), cas)
        for c in (gw_ocsp, gw_crl, client):
            charons.append(c)
            c.start()
        del gw_cert
        yield Lab(netns, gw_ocsp, gw_crl, client, cl_cert)
    finally:
        for c in charons:
            c.stop()
        stop_process(server, timeout=10)
        netns.delete()


def initiate(lab: Lab, conn: str) -> bool:
    proc = lab.client.swanctl("--initiate", "--ike", conn, "--timeout", "20", check=False, timeout=40)
    ok = proc.returncode == 0 and "completed successfully" in proc.stdout
    lab.client.swanctl("--terminate", "--ike", conn, "--timeout", "5", check=False)
    return ok


def test_strict_revocation_over_ocsp_and_crl(pki: Pki, lab: Lab) -> None:
    assert initiate(lab, "to-ocsp"), lab.gw_ocsp.log()[-4000:]
    assert "certificate status is good" in lab.gw_ocsp.log()
    assert initiate(lab, "to-crl"), lab.gw_crl.log()[-4000:]
    assert "crl correctly signed" in lab.gw_crl.log() or "certificate status is good" in lab.gw_crl.log()
    # revoke, wait until the published CRL lists it, drop the gateways' fetch caches (§7: cached until
    # nextUpdate) and try again
    pki.revoke(lab.client_cert, RevocationReason.keyCompromise)
    wait_for(lambda: ((crl := fetch_crl(pki.url, "ec.crl")) is not None
             and crl.get_revoked_certificate_by_serial_number(lab.client_serial) is not None) or None,
             what="revoked client in the CRL")
    lab.gw_ocsp.swanctl("--flush-certs", "--type", "ocsp_response", check=False)
    lab.gw_crl.swanctl("--flush-certs", "--type", "x509_crl", check=False)
    assert not initiate(lab, "to-ocsp")
    wait_for(lambda: "certificate was revoked" in lab.gw_ocsp.log() or None, timeout=10, what="OCSP revoked log")
    assert not initiate(lab, "to-crl")
    wait_for(lambda: "certificate was revoked" in lab.gw_crl.log() or None, timeout=10, what="CRL revoked log")
