"""An `ikepki init` killed part-way is never taken for a deployment: commands refuse it with one
line, `init --if-missing` (what the chart's init container runs) refuses to build on it, and
`init --force` starts over."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ca.ceremony import INIT_INCOMPLETE
from tests.conftest import IKEPKI, run_ikepki


def _kill_when(directory: Path, made: str) -> None:
    """Start `ikepki init` and SIGKILL it (and its children) as soon as ``made`` exists in ``directory``."""
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    proc = subprocess.Popen([IKEPKI, "init", "--dir", str(directory)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (directory / made).exists():
        assert proc.poll() is None, f"init ended before making {made}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # with its children (softhsm2-util), as a container stop would
    proc.wait(timeout=30)


@pytest.mark.parametrize("made", ["tokens", "deployment.yaml"])  # the SoftHSM token / the manifest
def test_killed_init_is_refused_until_forced(tmp_path: Path, made: str) -> None:
    directory = tmp_path / "ca"
    _kill_when(directory, made)
    # the ceremony still had the store, the service certificates and the admin credential to make
    assert (directory / INIT_INCOMPLETE).exists()
    if made == "deployment.yaml":
        listed = run_ikepki("certs", "list", directory=directory, check=False)
        assert listed.returncode == 2, listed
        lines = [line for line in listed.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "did not finish" in lines[0], listed.stderr
    for args in (["init", "--if-missing"], ["init"]):  # neither builds on the leftovers
        again = run_ikepki(*args, directory=directory, check=False)
        assert again.returncode == 4 and "did not finish" in again.stderr and "--force" in again.stderr, again
        assert "Traceback" not in again.stderr
    run_ikepki("init", "--force", directory=directory)
    assert not (directory / INIT_INCOMPLETE).exists()
    assert run_ikepki("certs", "list", directory=directory).returncode == 0
    assert run_ikepki("init", "--if-missing", "--json", directory=directory).stdout.count('"existing": true') == 1


def test_a_finished_init_leaves_no_marker(tmp_path: Path) -> None:
    run_ikepki("init", directory=tmp_path / "ca")
    assert not (tmp_path / "ca" / INIT_INCOMPLETE).exists()
