"""Posture tests: swtpm instances (the attestation tests' recipe) with measured boots."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "device"))

from device_helpers import running_swtpm


@pytest.fixture()
def swtpm() -> Iterator[Any]:
    with running_swtpm() as tpm:
        yield tpm


@pytest.fixture(scope="module")
def posture_pki(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``ikepki serve`` over the session deployment with posture on (policy file in a temp dir, reloaded
    on change) trusting two swtpm manufacturers; the TPMs are measured by the tests."""
    from contextlib import ExitStack

    from device_helpers import DevicePki, start_server, trust_dir
    from posture_helpers import EDR_SECRET, write_hooks, write_policy

    base = tmp_path_factory.mktemp("ikepki-posture")
    with ExitStack() as stack:
        tpms = [stack.enter_context(running_swtpm()) for _ in range(3)]
        directory = request.getfixturevalue("deployment_dir")
        roots = trust_dir(base / "ek-roots", *tpms)
        policy = write_policy(base / "posture.yaml")
        hooks = write_hooks(base)
        server = start_server(directory, env={"IKEPKI_ATTESTATION_EK_ROOTS": str(roots),
                                              "IKEPKI_POSTURE_POLICY": str(policy),
                                              "IKEPKI_RESPONSE_CONFIG_FILE": str(hooks)}, extra_args=("--no-workers",))
        stack.callback(server.stop)
        yield {"pki": DevicePki(server), "tpms": tpms, "policy": policy, "edr_secret": EDR_SECRET}
