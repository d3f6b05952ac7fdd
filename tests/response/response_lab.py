"""The response lab: ``ikepki serve`` over the session deployment with a hooks file of this
module's own, the bundled IKEv2 responder registered as a push gateway, a strongSwan charon
initiator holding one IKE SA per device, and Debian's Alertmanager posting to ikepki."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gw_procs import Charon, Conn, ResponderProc, free_udp_pair

from tests.conftest import Server, free_port, require_binary, run_ikepki, start_server
from tests.swan_harness import wait_until as wait_for  # the suites' one readiness poll

PUSH_ENV = {"IKEPKI_PUSH_BACKOFF_BASE_SECONDS": "0.2", "IKEPKI_PUSH_BACKOFF_MAX_SECONDS": "1.0",
            "IKEPKI_PUSH_LEASE_SECONDS": "3"}
GW_ID = "gw.example.test"


@dataclass
class Device:
    name: str  # device id and FQDN stem
    serial: str
    conn: str

    @property
    def fqdn(self) -> str:
        return f"{self.name}.example.test"


@dataclass
class Lab:
    dir: Path
    work: Path
    deployment: Any
    server: Server
    hooks_file: Path
    bearer_file: Path
    responder: ResponderProc
    charon: Charon | None = None
    devices: dict[str, Device] = field(default_factory=dict)
    gateway: str = ""

    # -- hooks file (reloaded by the server within a second of a change) ----------------------

    def write_hooks(self, config: dict[str, Any]) -> None:
        tmp = self.hooks_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        os.replace(tmp, self.hooks_file)
        time.sleep(0.6)  # the server checks the file's mtime at most every 0.5 s

    def write_hooks_text(self, text: str) -> None:
        tmp = self.hooks_file.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.hooks_file)
        time.sleep(0.6)

    # -- HTTP ---------------------------------------------------------------------------------

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.dir / "root-ca.pem"))

    def post_hook(self, source: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.server.https_url}/hooks/v1/{source}", content=body, verify=self.tls(), timeout=30,
                          headers={"content-type": "application/json", **(headers or {})})

    def token_file(self, role: str) -> Path:
        token = secrets.token_urlsafe(32)
        self.deployment.store.add_admin_token(f"resp-{role}-{secrets.token_hex(3)}", role, token,
                                              self.deployment.clock.now())
        path = self.work / f"token-{role}-{secrets.token_hex(3)}"
        path.write_text(token)
        return path

    def admin(self, token_file: Path) -> httpx.Client:
        return httpx.Client(base_url=f"{self.server.https_url}/admin/v1", verify=self.tls(), timeout=30,
                            headers={"authorization": f"Bearer {token_file.read_text().strip()}"})

    def status(self, serial: str) -> str:
        info = self.deployment.store.get(int(serial, 16))
        return str(info.status.value)

    def incidents(self, **query: Any) -> list[dict[str, Any]]:
        with self.admin(self.dir / "admin-token") as api:
            resp = api.get("/incidents", params=query)
            assert resp.status_code == 200, resp.text
            return list(resp.json())

    # -- devices ------------------------------------------------------------------------------

    def issue_device(self, name: str) -> tuple[bytes, bytes, str]:
        from ca.csr import parse_csr
        from ca.model import IssuanceRequest, Requester

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name.from_rfc4514_string(f"CN={name}.example.test"))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{name}.example.test")]), critical=False)
               .sign(key, hashes.SHA256()))
        issued = self.deployment.authority.issue(IssuanceRequest(
            parse_csr(csr.public_bytes(serialization.Encoding.PEM)), "machine", Requester("test", "response-lab"),
            device_id=name))
        pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return issued.certificate.public_bytes(serialization.Encoding.PEM), pem_key, issued.info.serial_hex

    def start_charon(self, names: list[str]) -> None:
        """One childless IKE SA per device, charon as initiator against the bundled responder."""
        certs: dict[str, tuple[bytes, bytes]] = {}
        conns = []
        for name in names:
            cert, key, serial = self.issue_device(name)
            certs[name] = (cert, key)
            conns.append(Conn(name, name, f"{name}.example.test", children=False))
            self.devices[name] = Device(name, serial, name)
        port, nat = free_udp_pair()
        self.charon = Charon(self.work / f"charon-{secrets.token_hex(3)}", port, nat)
        self.charon.state.mkdir()
        cacerts = {"root": (self.dir / "root-ca.pem").read_bytes(), "ec": (self.dir / "ca/ec.pem").read_bytes()}
        self.charon.write_config(conns, self.responder.port, certs, cacerts)
        self.charon.start()
        for name in names:
            ok, log = self.charon.initiate(name)
            assert ok, f"{name}: {log[-3000:]}"

    def responder_has(self, device: Device) -> bool:
        return any(sa.get("serial") == device.serial and sa.get("state") in (None, "established")
                   for sa in self.responder.sas())

    def sa_down_at(self, device: Device) -> datetime | None:
        """When the responder deleted the device's SA (its event log's timestamp)."""
        for e in self.responder.events():
            if e["event"] == "revocation_event" and e.get("serial") == device.serial and e.get("terminated_sas"):
                return datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        return None


@pytest.fixture(scope="module")
def lab(deployment_dir: Path, deployment: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not Path("/usr/lib/ipsec/charon").exists():
        pytest.fail("strongSwan charon is missing: run make setup")
    work = tmp_path_factory.mktemp("response-lab")
    hooks_file = work / "response.yaml"
    hooks_file.write_text("{}\n")
    bearer = work / "am-bearer"
    bearer.write_text(secrets.token_urlsafe(24))
    server = start_server(deployment_dir, env={**PUSH_ENV, "IKEPKI_RESPONSE_CONFIG_FILE": str(hooks_file)})
    # the bundled responder, a push gateway of the deployment
    gw_key = ec.generate_private_key(ec.SECP256R1())
    from ca.csr import parse_csr
    from ca.model import IssuanceRequest, Requester

    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={GW_ID}"))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(GW_ID)]), critical=False)
           .sign(gw_key, hashes.SHA256()))
    gw = deployment.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(serialization.Encoding.PEM)),
                                                    "gateway", Requester("test", "response-lab")))
    (work / "gw.pem").write_bytes(gw.pem_chain())
    (work / "gw.key").write_bytes(gw_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (work / "bundle.pem").write_bytes(b"".join((deployment_dir / p).read_bytes()
                                               for p in ("root-ca.pem", "ca/ec.pem", "ca/rsa.pem")))
    (work / "responder").mkdir()
    udp, _ = free_udp_pair()
    responder = ResponderProc(work / "responder", udp, free_port(), [
        "--cert", str(work / "gw.pem"), "--key", str(work / "gw.key"), "--ca-bundle", str(work / "bundle.pem"),
        "--ocsp", "off", "--local-id", GW_ID])
    responder.start()
    lab = Lab(deployment_dir, work, deployment, server, hooks_file, bearer, responder)
    lab.gateway = f"resp-lab-{secrets.token_hex(3)}"
    run_ikepki("gateways", "add", "--name", lab.gateway, "--kind", "responder", "--url", responder.url,
               directory=deployment_dir)
    try:
        yield lab
    finally:
        run_ikepki("gateways", "disable", lab.gateway, directory=deployment_dir, check=False)
        if lab.charon is not None:
            lab.charon.stop()
        responder.stop()
        server.stop()


@dataclass
class Alertmanager:
    """Debian's prometheus-alertmanager: no cluster, temp storage, webhook receiver -> ikepki."""

    work: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def amtool(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([require_binary("amtool"), f"--alertmanager.url={self.url}", *args],
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, f"amtool {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc

    def log(self) -> str:
        return (self.work / "alertmanager.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def alertmanager_config(hook_url: str, bearer_file: Path, ca_file: Path) -> dict[str, Any]:
    """The receiver config of the README runbook."""
    return {"route": {"receiver": "ikepki", "group_by": ["device"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "ikepki", "webhook_configs": [{
                "url": hook_url, "send_resolved": True, "max_alerts": 0,
                "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(bearer_file)},
                                "tls_config": {"ca_file": str(ca_file)}}}]}]}


def start_alertmanager(work: Path, config: dict[str, Any]) -> Alertmanager:
    binary = require_binary("prometheus-alertmanager")
    work.mkdir(parents=True, exist_ok=True)
    (work / "am.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "alertmanager.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=debug"], stdout=log, stderr=subprocess.STDOUT)
    am = Alertmanager(work, port, proc)
    ok = wait_for(lambda: _ready(am), 30, 0.1)
    if not ok:
        am.stop()
        raise AssertionError(f"alertmanager did not start:\n{am.log()}")
    return am


def _ready(am: Alertmanager) -> bool:
    if am.proc.poll() is not None:
        raise AssertionError(f"alertmanager exited:\n{am.log()}")
    try:
        return httpx.get(f"{am.url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def alertmanager_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Alertmanager]]:
    started: list[Alertmanager] = []

    def factory(config: dict[str, Any]) -> Alertmanager:
        am = start_alertmanager(tmp_path / f"am-{len(started)}", config)
        started.append(am)
        return am

    yield factory
    for am in started:
        am.stop()


def dump(obj: Any) -> bytes:
    return json.dumps(obj).encode()
