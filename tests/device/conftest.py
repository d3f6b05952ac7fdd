"""Fixtures of the device tests: real swtpm instances and one real ``ikepki serve`` for the package.

``device_tpm`` and ``victim_tpm`` come from manufacturer CAs the server trusts (``attestation.ek_roots``);
``victim_tpm`` is the one that gets blocked.  ``foreign_tpm`` comes from an untrusted manufacturer.
The server runs over the shared session deployment: tests use fresh EAB keys and fresh TPMs, never
assume emptiness.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from device_helpers import DevicePki, running_swtpm, start_server, trust_dir


@pytest.fixture(scope="session")
def device_env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Three swtpm and ``ikepki serve`` over the session deployment, trusting the first two manufacturers
    (``IKEPKI_ATTESTATION_EK_ROOTS``); the TPMs are provisioned while the session deployment initialises."""
    base = tmp_path_factory.mktemp("ikepki-device")
    with ExitStack() as stack, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(stack.enter_context, running_swtpm()) for _ in range(3)]
        directory = request.getfixturevalue("deployment_dir")
        device, victim, foreign = (f.result() for f in futures)
        roots = trust_dir(base / "ek-roots", device, victim)
        server = start_server(directory, env={"IKEPKI_ATTESTATION_EK_ROOTS": str(roots)},
                              extra_args=("--no-workers",))
        stack.callback(server.stop)
        yield {"pki": DevicePki(server), "device": device, "victim": victim, "foreign": foreign}


@pytest.fixture(scope="session")
def pki(device_env: dict[str, Any]) -> DevicePki:
    return device_env["pki"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def device_tpm(device_env: dict[str, Any]) -> Any:
    return device_env["device"]


@pytest.fixture(scope="session")
def victim_tpm(device_env: dict[str, Any]) -> Any:
    return device_env["victim"]


@pytest.fixture(scope="session")
def foreign_tpm(device_env: dict[str, Any]) -> Any:
    return device_env["foreign"]
