"""One ikepki server per ACME test module over the session deployment (http-01 on a free port)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from acme_helpers import AcmeServer, free_port, root_conftest, start_server

Server = root_conftest.Server


def acme_env(http01_port: int, tlsalpn_port: int, **extra: str) -> dict[str, str]:
    env = {"IKEPKI_ACME_HTTP01_PORT": str(http01_port), "IKEPKI_ACME_TLSALPN01_PORT": str(tlsalpn_port),
           "IKEPKI_ACME_VALIDATION_HOSTS": "*.test=127.0.0.1", "IKEPKI_ACME_VALIDATION_TIMEOUT": "5"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def acme(deployment_dir: Path) -> Iterator[AcmeServer]:
    """`ikepki serve` over the session deployment with EAB required (the default)."""
    http01, tlsalpn = free_port(), free_port()
    srv = start_server(deployment_dir, env=acme_env(http01, tlsalpn), extra_args=("--no-workers",))
    yield AcmeServer(srv, http01, tlsalpn)
    stop_quickly(srv)


def stop_quickly(srv: Server) -> None:
    """SIGTERM, then SIGKILL after 3 s: uvicorn waits for TLS close_notify on idle keep-alive
    connections a client library left open (requests pools), which would cost 10 s per module."""
    srv.process.send_signal(signal.SIGTERM)
    try:
        srv.process.wait(3)
    except subprocess.TimeoutExpired:
        srv.process.kill()
        srv.process.wait(5)
