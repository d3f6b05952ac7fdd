"""SCEP fixtures: `ikepki serve` over the session deployment configured through IKEPKI_SCEP_*
(a manual-approval profile, a webhook profile, a staged CA rollover) — ``scep_defaults`` with the
default settings, ``scep`` with the settings micromdm scepclient needs (no root in GetCACert, single
DES on) — and a tiny local webhook server."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.conftest import Server, free_port, start_server

WEBHOOK_YES = "webhook-yes"


@dataclass
class Webhook:
    port: int
    calls: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/validate"

    def start(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length", "0")), 1 << 20)
                payload = json.loads(self.rfile.read(length) or b"{}")
                hook.calls.append(payload)
                ok = payload.get("challenge_password") == WEBHOOK_YES
                self.send_response(200 if ok else 403)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture(scope="package")
def webhook() -> Iterator[Webhook]:
    hook = Webhook(free_port())
    hook.start()
    yield hook
    hook.stop()


def staged_rollover(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ikepki Issuing CA RSA2 (staged)")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


@dataclass
class ScepEnv:
    server: Server
    webhook: Webhook
    staged: Path

    @property
    def url(self) -> str:
        return f"{self.server.http_url}/scep"

    def counts(self) -> tuple[int, int]:
        """(certificates, scep transactions) in the store: 'nothing stored' checks."""
        with sqlite3.connect(self.server.dir / "ikepki.db") as conn:
            certs = conn.execute("select count(*) from certificates").fetchone()[0]
            txs = conn.execute("select count(*) from scep_transactions").fetchone()[0]
        return int(certs), int(txs)


def _serve(deployment_dir: Path, webhook: Webhook, staged: Path, extra: dict[str, str]) -> Server:
    profiles = {"gateway": {"manual_approval": True},
                "user": {"webhook_url": webhook.url, "webhook_timeout": 2}}
    env = {"IKEPKI_SCEP_PROFILES": json.dumps(profiles), "IKEPKI_SCEP_NEXT_CA_CERTS": str(staged),
           "IKEPKI_LOG_LEVEL": "INFO", **extra}
    http_port = free_port()  # the CRL distribution point (GetCRL) must name this server
    env["IKEPKI_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{http_port}"
    return start_server(deployment_dir, env=env, extra_args=("--no-workers",), http_port=http_port)


@pytest.fixture(scope="package")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return staged_rollover(tmp_path_factory.mktemp("scep-rollover") / "next-ca.pem")


@pytest.fixture(scope="package")
def scep(deployment_dir: Path, webhook: Webhook, staged: Path) -> Iterator[ScepEnv]:
    """The settings for micromdm scepclient with default flags: ``include_root: false`` (GetCACert
    all RSA: RA + RSA issuing CA) and ``allow_single_des: true``."""
    server = _serve(deployment_dir, webhook, staged, {"IKEPKI_SCEP_ALLOW_SINGLE_DES": "1",
                                                      "IKEPKI_SCEP_INCLUDE_ROOT": "0"})
    yield ScepEnv(server, webhook, staged)
    server.stop()


@pytest.fixture(scope="package")
def scep_defaults(deployment_dir: Path, webhook: Webhook, staged: Path) -> Iterator[ScepEnv]:
    """The default SCEP settings: GetCACert with the root (strongSwan ``pki --scepca`` needs a
    self-signed CA), single DES off."""
    server = _serve(deployment_dir, webhook, staged, {})
    yield ScepEnv(server, webhook, staged)
    server.stop()
