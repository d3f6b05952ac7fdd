"""Fixtures for incident response: one deployment + ``ikepki serve`` per module (restartable),
a tiny webhook receiver, certificates issued through ``ikepki issue``, and a real strongSwan
gateway/client pair in network namespaces."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Server, free_port, run_ikepki, start_server
from tests.incident.swan import GW_ID, Charon, Netns, PortIntoNetns, client_conf, gateway_conf

# this module's server: quick retries and a short lease, so outages and crashes resolve in seconds
# and an admin client-certificate subject mapped to a role
ADMIN_CERT_SUBJECT = "CN=incident-admin-cert"
PUSH_ENV = {"IKEPKI_PUSH_BACKOFF_BASE_SECONDS": "0.2", "IKEPKI_PUSH_BACKOFF_MAX_SECONDS": "1.0",
            "IKEPKI_PUSH_LEASE_SECONDS": "3",
            "IKEPKI_ADMIN_CERT_ROLES": json.dumps({"user": {ADMIN_CERT_SUBJECT: "revoker"}})}


@dataclass
class Incident:
    """A deployment with a running server; ``restart`` brings the server back on new ports."""

    dir: Path
    server: Server
    deployment: Any  # the same deployment opened in this process (fast issuance through the Authority)

    @property
    def url(self) -> str:
        return self.server.https_url

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token or self.server.admin_token()}"} if token != "" else {}
        return httpx.Client(base_url=f"{self.url}/admin/v1", verify=ssl.create_default_context(
            cafile=str(self.dir / "root-ca.pem")), timeout=60, headers=headers)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.server.stop(sig)
        self.server = start_server(self.dir, env=PUSH_ENV)

    def ikepki(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return run_ikepki(*args, directory=self.dir, check=check, input=input)

    def remote(self, *args: str, token_file: Path | None = None, check: bool = True) -> Any:
        return run_ikepki(*args, "--server", self.url, "--token", str(token_file or self.dir / "admin-token"),
                          "--ca-bundle", str(self.dir / "root-ca.pem"), check=check)

    def token_file(self, name: str, role: str) -> Path:
        token = secrets.token_urlsafe(32)
        self.deployment.store.add_admin_token(f"{name}-{secrets.token_hex(3)}", role, token,
                                              self.deployment.clock.now())
        path = self.dir / f"token-{name}-{secrets.token_hex(3)}"
        path.write_text(token)
        return path

    def make_csr(self, san: x509.GeneralName, stem: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={stem}"))
               .add_extension(x509.SubjectAlternativeName([san]), critical=False).sign(key, hashes.SHA256()))
        out = self.dir / "incident-issued"
        out.mkdir(exist_ok=True)
        (out / f"{stem}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        (out / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        return out / f"{stem}.csr", out / f"{stem}.key"

    def issue_cli(self, profile: str, san: x509.GeneralName, stem: str) -> tuple[Path, Path, str]:
        """Through ``ikepki issue``: (cert chain PEM, key PEM, serial hex)."""
        csr, key = self.make_csr(san, stem)
        pem = csr.with_suffix(".pem")
        proc = self.ikepki("issue", "--csr", str(csr), "--profile", profile, "--out", str(pem), "--json")
        return pem, key, json.loads(proc.stdout)["serial"]

    def issue(self, profile: str, san: x509.GeneralName, stem: str, device_id: str | None = None
              ) -> tuple[Path, Path, str]:
        """Through the in-process Authority: (cert chain PEM, key PEM, serial hex)."""
        from ca.csr import parse_csr
        from ca.model import IssuanceRequest, Requester

        csr, key = self.make_csr(san, stem)
        request = parse_csr(csr.read_bytes())  # the harness acts as an operator: it grants the CN it asks for
        issued = self.deployment.authority.issue(IssuanceRequest(request, profile, Requester("test", "incident"),
                                                                 device_id=device_id,
                                                                 subject_grants=tuple(request.subject)))
        pem = csr.with_suffix(".pem")
        pem.write_bytes(issued.pem_chain())
        return pem, key, issued.info.serial_hex

    def add_gateway(self, name: str, kind: str, url: str) -> None:
        with self.api() as api:
            resp = api.post("/gateways", json={"name": name, "kind": kind, "url": url})
            assert resp.status_code == 201, resp.text

    def disable_gateway(self, name: str) -> None:
        with self.api() as api:
            api.patch(f"/gateways/{name}", json={"enabled": False})

    def cert_status(self, serial: str) -> str:
        with self.api() as api:
            return str(api.get(f"/certificates/{serial}").json()["status"])

    def deliveries(self, serial: str) -> list[dict[str, Any]]:
        with self.api() as api:
            return list(api.post("/deliveries/search", json={"serials": [serial]}).json())


@pytest.fixture(scope="session")
def incident(deployment_dir: Path, deployment: Any) -> Iterator[Incident]:
    """The session deployment with a server of the incident tests' own (started once for all of
    them; a second replica if the session server runs too: claims keep them off each other's
    deliveries)."""
    inc = Incident(deployment_dir, start_server(deployment_dir, env=PUSH_ENV), deployment)
    yield inc
    inc.server.stop()


@dataclass
class Received:
    at: float
    path: str
    content_type: str
    body: bytes


class WebhookReceiver:
    """A small HTTP server standing in for a generic webhook gateway. ``hang`` delays answers."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.hang = 0.0
        self.got_request = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length", "0")), 1 << 20)
                body = self.rfile.read(length)
                receiver.got_request.set()
                if receiver.hang:
                    time.sleep(receiver.hang)
                    return  # close without answering: the delivery fails
                receiver.received.append(Received(time.time(), self.path, self.headers.get("content-type", ""),
                                                  body))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.stop()


def _split_chain(pem: bytes) -> tuple[bytes, bytes]:
    certs = x509.load_pem_x509_certificates(pem)
    return (certs[0].public_bytes(serialization.Encoding.PEM),
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]))


@dataclass
class SwanRig:
    netns: Netns
    gateway: Charon
    client: Charon
    client_id: str
    client_serial: str
    gateway_name: str
    notes: list[str] = field(default_factory=list)


@pytest.fixture
def swan_rig(incident: Incident, tmp_path: Path) -> Iterator[SwanRig]:
    """strongSwan gateway (registered as a vici gateway) and client, certs from ``ikepki issue``."""
    for tool in ("/usr/lib/ipsec/charon", shutil.which("swanctl"), shutil.which("ip"), shutil.which("unshare")):
        if not tool or not os.path.exists(tool):
            pytest.fail(f"{tool} missing: strongSwan (charon, swanctl) and iproute2 are required")
    tag = os.urandom(3).hex()
    client_id = f"client-{tag}@example.test"
    gw_pem, gw_key, _ = incident.issue("gateway", x509.DNSName(GW_ID), f"gw-{tag}")
    cl_pem, cl_key, cl_serial = incident.issue_cli("user", x509.RFC822Name(client_id), f"client-{tag}")
    root = (incident.dir / "root-ca.pem").read_bytes()
    ns = Netns(tag)
    ns.create()
    gw = Charon("gateway", tmp_path / "gw", ns.gw)
    cl = Charon("client", tmp_path / "cl", ns.cl)
    gw_leaf, chain = _split_chain(gw_pem.read_bytes())
    cl_leaf, _ = _split_chain(cl_pem.read_bytes())
    common = {"x509ca/root.pem": root, "x509ca/issuing.pem": chain}
    # revocation = strict: every IKE_AUTH needs a GOOD status from the OCSP URL in the client's
    # certificate, which the gateway's namespace reaches through a port forward to the server
    gw.configure(gateway_conf(ns.gw_addr, "strict"), {**common, "x509/gw.pem": gw_leaf,
                                                      "private/gw.pem": gw_key.read_bytes()})
    cl.configure(client_conf(ns.cl_addr, ns.gw_addr, client_id),
                 {**common, "x509/client.pem": cl_leaf, "private/client.pem": cl_key.read_bytes()})
    ocsp_port = urlsplit(incident.deployment.issuers["ec"].urls.ocsp).port or 80
    forward = PortIntoNetns(ns.gw, ocsp_port, incident.server.http_port)
    try:
        gw.start()
        cl.start()
        name = f"swan-{tag}"
        incident.ikepki("gateways", "add", "--name", name, "--kind", "vici", "--url", gw.vici_url)
        yield SwanRig(ns, gw, cl, client_id, cl_serial, name)
    finally:
        incident.disable_gateway(f"swan-{tag}")
        cl.stop()
        gw.stop()
        forward.close()
        ns.delete()
