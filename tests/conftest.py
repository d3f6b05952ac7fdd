"""Shared fixtures: real deployments (SoftHSM token + SQLite in a temp dir) and real servers.

SoftHSM reads SOFTHSM2_CONF once per process, so this pytest process opens exactly one
deployment in-process (``deployment``, session-scoped). Tests that need a deployment of
their own use ``fresh_dir`` and talk to it only through subprocesses (CLI or server).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import system_deps

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test whose Debian packages (tests/system_deps.py: NEEDS) are not installed with one
    line naming them, before any fixture runs."""
    try:
        relative = item.path.resolve().relative_to(TESTS).as_posix()
    except ValueError:
        return
    missing = system_deps.missing_packages(system_deps.needs_of(relative))
    if missing:
        pytest.fail(system_deps.advice(missing), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A program that could not be started (FileNotFoundError naming a program a Debian package
    provides) is reported as that one line, not as the harness's stack trace."""
    outcome = yield
    report = outcome.get_result()
    exc = call.excinfo.value if call.excinfo is not None else None
    seen = 0
    while exc is not None and seen < 10 and report.failed:
        if isinstance(exc, FileNotFoundError) and exc.filename:
            line = system_deps.program_advice(str(exc.filename))
            if line:
                report.longrepr = f"{item.nodeid}: {line}"
                return
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
IKEPKI = str(Path(sys.executable).with_name("ikepki"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ikepki(*args: str, directory: Path | None = None, check: bool = True, env: dict[str, str] | None = None,
               timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [IKEPKI, *args]
    if directory is not None:
        cmd += ["--dir", str(directory)]
    full_env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False,
                          input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def init_deployment_dir(path: Path, extra_config: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if extra_config:
        (path / "ikepki.yaml").write_text(extra_config)
    run_ikepki("init", directory=path)
    return path


@pytest.fixture(scope="session")
def deployment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised deployment for the whole session (tests must not assume it is empty)."""
    return init_deployment_dir(tmp_path_factory.mktemp("ikepki-session"))


@pytest.fixture(scope="session")
def deployment(deployment_dir: Path):  # type: ignore[no-untyped-def]
    """The session deployment opened in this process (its SoftHSM token becomes this process's)."""
    from ca.deployment import Deployment

    os.environ["SOFTHSM2_CONF"] = str(deployment_dir / "softhsm2.conf")
    return Deployment.open(deployment_dir)


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    """A new deployment of this test's own (use it through subprocesses only)."""
    return init_deployment_dir(tmp_path / "ikepki")


@dataclass
class Server:
    dir: Path
    https_port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def root_pem(self) -> Path:
        return self.dir / "root-ca.pem"

    def client(self) -> httpx.Client:
        return httpx.Client(verify=str(self.root_pem), timeout=30)

    def admin_token(self) -> str:
        return (self.dir / "admin-token").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(directory: Path, env: dict[str, str] | None = None, extra_args: tuple[str, ...] = (),
                 http_port: int | None = None) -> Server:
    """`ikepki serve` on free loopback ports (``http_port`` fixed when the caller needs it in URLs).
    A port found free can be taken before the server binds it (another test's server, an outgoing
    connection's ephemeral port): then the start is tried again on new free ports."""
    for attempt in range(3):
        try:
            return _start_server(directory, env, extra_args, http_port)
        except PortTaken:
            if attempt == 2 or http_port is not None:
                raise
    raise AssertionError("unreachable")


class PortTaken(AssertionError):
    pass


def _start_server(directory: Path, env: dict[str, str] | None, extra_args: tuple[str, ...],
                  http_port: int | None) -> Server:
    https_port, http_port = free_port(), http_port or free_port()
    log = directory / f"server-{https_port}.log"
    full_env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    full_env.update(env or {})
    fh = log.open("wb")
    proc = subprocess.Popen([IKEPKI, "serve", "--dir", str(directory), "--https-port", str(https_port),
                             "--http-port", str(http_port), *extra_args], stdout=fh, stderr=subprocess.STDOUT,
                            env=full_env, start_new_session=True)
    server = Server(directory, https_port, http_port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text()
            raise (PortTaken if "Address already in use" in text else AssertionError)(
                f"ikepki serve exited ({proc.returncode}):\n{text}")
        try:
            if httpx.get(f"{server.http_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"ikepki serve did not come up:\n{log.read_text()}")


@pytest.fixture
def server(fresh_dir: Path) -> Iterator[Server]:
    """`ikepki serve` on free loopback ports over a fresh deployment."""
    srv = start_server(fresh_dir)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def session_server(deployment_dir: Path) -> Iterator[Server]:
    """`ikepki serve` over the session deployment (shared; tests must not assume emptiness)."""
    srv = start_server(deployment_dir)
    yield srv
    srv.stop()


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(system_deps.program_advice(name) or f"{name} is not installed: run `make setup`", pytrace=False)
    return path
