"""Fixtures for incident response: one deployment + ``ikepki serve`` per module (restartable),
a tiny webhook receiver, certificates issued through ``ikepki issue``, and a real strongSwan
gateway/client pair in network namespaces."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Server, free_port, init_deployment_dir, run_ikepki, start_server
from tests.incident.swan import GW_ID, Charon, Netns, client_conf, gateway_conf

PUSH_CONFIG = """
push:
  backoff_base_seconds: 0.2
  backoff_max_seconds: 1.0
  lease_seconds: 3
"""


@dataclass
class Incident:
    """A deployment with a running server; ``restart`` brings the server back on new ports."""

    dir: Path
    server: Server

    @property
    def url(self) -> str:
        return self.server.https_url

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token or self.server.admin_token()}"} if token != "" else {}
        return httpx.Client(base_url=f"{self.url}/admin/v1", verify=ssl.create_default_context(
            cafile=str(self.dir / "root-ca.pem")), timeout=60, headers=headers)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.server.stop(sig)
        self.server = start_server(self.dir)

    def ikepki(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return run_ikepki(*args, directory=self.dir, check=check, input=input)

    def remote(self, *args: str, token_file: Path | None = None, check: bool = True) -> Any:
        return run_ikepki(*args, "--server", self.url, "--token", str(token_file or self.dir / "admin-token"),
                          "--ca-bundle", str(self.dir / "root-ca.pem"), check=check)

    def token_file(self, name: str, role: str) -> Path:
        proc = self.ikepki("admin", "token", "--name", name, "--role", role)
        path = self.dir / f"token-{name}"
        path.write_text(proc.stdout.strip())
        return path

    def issue(self, profile: str, san: x509.GeneralName, stem: str) -> tuple[Path, Path, str]:
        """Key + CSR made here, certificate from ``ikepki issue``: (cert chain PEM, key PEM, serial hex)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={stem}"))
               .add_extension(x509.SubjectAlternativeName([san]), critical=False).sign(key, hashes.SHA256()))
        out = self.dir / "issued"
        out.mkdir(exist_ok=True)
        (out / f"{stem}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        (out / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        proc = self.ikepki("issue", "--csr", str(out / f"{stem}.csr"), "--profile", profile, "--out",
                           str(out / f"{stem}.pem"), "--json")
        return out / f"{stem}.pem", out / f"{stem}.key", json.loads(proc.stdout)["serial"]

    def cert_status(self, serial: str) -> str:
        with self.api() as api:
            return str(api.get(f"/certificates/{serial}").json()["status"])

    def deliveries(self, serial: str) -> list[dict[str, Any]]:
        with self.api() as api:
            return list(api.post("/deliveries/search", json={"serials": [serial]}).json())


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    directory = init_deployment_dir(tmp_path_factory.mktemp("incident") / "ikepki", PUSH_CONFIG)
    inc = Incident(directory, start_server(directory))
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
    cl_pem, cl_key, cl_serial = incident.issue("user", x509.RFC822Name(client_id), f"client-{tag}")
    root = (incident.dir / "root-ca.pem").read_bytes()
    ns = Netns(tag)
    ns.create()
    gw = Charon("gateway", tmp_path / "gw", ns.gw)
    cl = Charon("client", tmp_path / "cl", ns.cl)
    gw_leaf, chain = _split_chain(gw_pem.read_bytes())
    cl_leaf, _ = _split_chain(cl_pem.read_bytes())
    common = {"x509ca/root.pem": root, "x509ca/issuing.pem": chain}
    gw.configure(gateway_conf(ns.gw_addr), {**common, "x509/gw.pem": gw_leaf, "private/gw.pem": gw_key.read_bytes()})
    cl.configure(client_conf(ns.cl_addr, ns.gw_addr, client_id),
                 {**common, "x509/client.pem": cl_leaf, "private/client.pem": cl_key.read_bytes()})
    try:
        gw.start()
        cl.start()
        name = f"swan-{tag}"
        incident.ikepki("gateways", "add", "--name", name, "--kind", "vici", "--url", gw.vici_url)
        yield SwanRig(ns, gw, cl, client_id, cl_serial, name)
    finally:
        incident.ikepki("gateways", "disable", f"swan-{tag}", check=False)
        cl.stop()
        gw.stop()
        ns.delete()
