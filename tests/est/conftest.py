"""One EST setup for this package: the session deployment with an ``est:`` config (labels,
pipelines, RA subject, manual approval), served twice over the same store: ``est.server`` (no proxy
header trusted) and ``est.proxied`` (IKEPKI_EST_TRUSTED_PROXY_HEADER=ssl-client-cert and
IKEPKI_EST_DEFAULT_LABEL=approval: strongSwan pki cannot name a label)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from enrollment.est.auth import hash_password
from tests.conftest import Server, run_ikepki, start_server
from tests.est.est_helpers import StoreView, enroll, issued_cert, make_csr, new_key, write_pem

PIPELINE_PASSWORD = "intune-pipeline-pw"
STRICT_PASSWORD = "strict-pipeline-pw"
RA_SUBJECT = "CN=mdm-ra,O=Example"
PROXY_HEADER = "ssl-client-cert"


def est_config() -> str:
    return f"""\
est:
  default_label: machine
  labels:
    machine: {{profile: machine}}
    user: {{profile: user}}
    gateway: {{profile: gateway, auth: [basic, client-cert]}}
    approval: {{profile: machine, manual_approval: true, retry_after_seconds: 1}}
    certonly: {{profile: machine, auth: [client-cert]}}
    shortlived: {{profile: machine, auth: [basic], lifetime_hours: 0.0006}}
    otherteam: {{profile: machine}}
  pipelines:
    intune:
      password_hash: "{hash_password(PIPELINE_PASSWORD, 1000)}"
      labels: [machine, user, gateway, approval, shortlived]
    strict: {{password_hash: "{hash_password(STRICT_PASSWORD, 1000)}", registered_only: true}}
  ra_subjects: ["{RA_SUBJECT}"]
profiles:  # the subject these MDM clients send (CN = device name, O=Example); never OU (a role)
  machine: {{subject: {{CN: ["*"], O: [Example]}}}}
  user: {{subject: {{CN: ["*"], O: [Example]}}}}
  gateway: {{subject: {{CN: ["*"], O: [Example]}}}}
"""


@dataclass
class EstEnv:
    dir: Path
    server: Server
    proxied: Server
    store: StoreView
    ra_cert: Path  # PEM: RA client cert; ra_key its key
    ra_key: Path
    config: Path | None = None  # the --config file the servers use
    cli_registration: dict[str, str] | None = None  # `ikepki est register --json` output for cli-dev-1

    @property
    def url(self) -> str:
        return self.server.https_url

    @property
    def root(self) -> str:
        return str(self.dir / "root-ca.pem")

    def client(self, cert: tuple[str, str] | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.root)
        if cert is not None:  # httpx 0.28 ignores cert= when verify is a path
            ctx.load_cert_chain(*cert)
        return httpx.Client(verify=ctx, timeout=30)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.admin_token()}"}

    def register(self, devices: list[dict[str, object]]) -> dict[str, str]:
        with self.client() as c:
            r = c.post(f"{self.url}/admin/v1/est/registrations", json={"devices": devices},
                       headers=self.admin_headers())
        assert r.status_code == 201, r.text
        return {d["device_id"]: d["secret"] for d in r.json()["registrations"]}

    def register_one(self, device: str, sans: list[str], profile: str = "machine") -> str:
        return self.register([{"device_id": device, "profile": profile, "sans": sans}])[device]

    def issue(self, tmp: Path, cn: str, san: str, label: str = "machine") -> tuple[Path, Path]:
        """A client certificate obtained over EST by the ``intune`` pipeline: (cert PEM, key PEM)."""
        key = new_key()
        with self.client() as c:
            r = enroll(c, self.url, make_csr(key, cn, [f"DNS:{san}"]), auth=("intune", PIPELINE_PASSWORD),
                       label=label)
        cert = issued_cert(r)
        return write_pem(tmp / f"{cn}.pem", certs=[cert]), write_pem(tmp / f"{cn}.key", key)

    def revoke(self, serial: int) -> None:
        with self.client() as c:
            r = c.post(f"{self.url}/admin/v1/revocations", headers=self.admin_headers(),
                       json={"serials": [format(serial, "x")], "reason": "keyCompromise"})
        assert r.status_code == 200 and r.json()["revoked"], r.text

    def pending(self) -> list[dict[str, object]]:
        with self.client() as c:
            r = c.get(f"{self.url}/admin/v1/est/pending", headers=self.admin_headers())
        assert r.status_code == 200, r.text
        return list(r.json())

    def decide(self, pending_id: str, decision: str = "approve") -> None:
        with self.client() as c:
            r = c.post(f"{self.url}/admin/v1/est/pending/{pending_id}/{decision}", headers=self.admin_headers())
        assert r.status_code == 200, r.text


@pytest.fixture(scope="package")
def est(deployment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstEnv]:
    """The shared session deployment, served with this package's own config file (``--config``:
    the deployment's ikepki.yaml plus an ``est:`` section), so no extra `ikepki init` is needed."""
    base = tmp_path_factory.mktemp("est")
    directory = deployment_dir
    config = base / "ikepki-est.yaml"
    config.write_text((directory / "ikepki.yaml").read_text() + "\n" + est_config())
    env = EstEnv(directory, None, None, StoreView(directory / "ikepki.db"), base / "ra.pem", base / "ra.key")  # type: ignore[arg-type]
    env.config = config
    started: dict[str, Server] = {}
    errors: list[BaseException] = []

    def start(name: str, extra: dict[str, str]) -> None:
        try:
            started[name] = start_server(directory, env=extra, extra_args=("--config", str(config)))
        except BaseException as exc:
            errors.append(exc)

    def cli_register() -> None:  # the CLI's own process start is slow: overlap it with the servers'
        try:
            env.cli_registration = json.loads(run_ikepki(
                "est", "register", "--device", "cli-dev-1", "--profile", "machine", "--san",
                "DNS:cli-dev-1.example.test,IP:192.0.2.10", "--ek-fingerprint", "ab" * 32, "--expires", "2", "--json",
                "--config", str(config), directory=directory).stdout)
        except BaseException as exc:
            errors.append(exc)

    def issue_ra() -> None:  # an operator issues the RA certificate; EST refuses RA subjects
        try:
            key = new_key()
            (base / "ra.csr").write_bytes(make_csr(key, "mdm-ra", ["DNS:mdm-ra.example.test"]))
            run_ikepki("issue", "--csr", str(base / "ra.csr"), "--profile", "machine", "--out", str(env.ra_cert),
                       "--subject", RA_SUBJECT, directory=directory)
            write_pem(env.ra_key, key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cli_register), threading.Thread(target=issue_ra),
               threading.Thread(target=start, args=("server", {})),
               threading.Thread(target=start, args=("proxied", {"IKEPKI_EST_TRUSTED_PROXY_HEADER": PROXY_HEADER,
                                                                "IKEPKI_EST_DEFAULT_LABEL": "approval"}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for srv in started.values():
            srv.stop()
        raise errors[0]
    env.server, env.proxied = started["server"], started["proxied"]
    yield env
    env.proxied.stop()
    env.server.stop()


def pending_ids(env: EstEnv) -> list[str]:
    return [str(p["id"]) for p in env.pending()]


def load_pem_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]
