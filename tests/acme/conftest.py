"""One ikepki server for the ACME tests over the session deployment (http-01 on a free port);
test_protocol.py starts its own with a small rate limit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from acme_helpers import AcmeServer, acme_env, free_port, start_server, stop_quickly


@pytest.fixture(scope="session")
def acme(deployment_dir: Path) -> Iterator[AcmeServer]:
    """`ikepki serve` over the session deployment with EAB required (the default)."""
    http01, tlsalpn = free_port(), free_port()
    srv = start_server(deployment_dir, env=acme_env(http01, tlsalpn), extra_args=("--no-workers",))
    yield AcmeServer(srv, http01, tlsalpn)
    stop_quickly(srv)
