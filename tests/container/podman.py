"""Podman from the tests: a ledger of every container, pod and volume a test creates (all named
``ikepki-test-<random>-…``) so that they are removed even when the test fails, and inspection
helpers."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.system_deps import program_advice

REPO = Path(__file__).resolve().parents[2]
STATE = "/var/lib/ikepki"
# What the chart gives every pod (charts/ikepki: readOnlyRootFilesystem, runAsNonRoot 10001,
# capabilities drop ALL, allowPrivilegeEscalation false, /tmp an emptyDir).
HARDENED = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777,size=64m",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def podman(*args: str, check: bool = True, timeout: float = 180, input: str | None = None) -> str:
    """Run podman; return stdout (raise with its output on failure when ``check``)."""
    try:
        proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False,
                              input=input)
    except FileNotFoundError:
        raise AssertionError(program_advice("podman")) from None
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


class Ledger:
    """Names and removes what a test creates."""

    def __init__(self) -> None:
        self.prefix = f"ikepki-test-{secrets.token_hex(4)}"
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.pods: list[str] = []
        self.kube_files: list[Path] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def volume(self, suffix: str) -> str:
        name = self.name(suffix)
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(self, suffix: str, image: str, *args: str, options: tuple[str, ...] = (), detach: bool = True,
            timeout: float = 300) -> str:
        """`podman run` with the chart's hardening; detached returns the name, else the output."""
        name = self.name(suffix)
        self.containers.append(name)
        mode = ("-d",) if detach else ()
        out = podman("run", *mode, "--name", name, *HARDENED, *options, image, *args, timeout=timeout)
        return name if detach else out

    def cleanup(self) -> None:
        for path in self.kube_files:
            podman("kube", "down", str(path), check=False, timeout=120)
        for pod in self.pods:
            podman("pod", "rm", "-f", "-t", "0", pod, check=False, timeout=120)
        for name in self.containers:
            podman("rm", "-f", "-t", "0", name, check=False, timeout=120)
        for name in self.volumes:
            podman("volume", "rm", "-f", name, check=False, timeout=120)


@contextmanager
def ledger() -> Iterator[Ledger]:
    led = Ledger()
    try:
        yield led
    finally:
        led.cleanup()


def inspect(name: str) -> dict[str, Any]:
    data = json.loads(podman("inspect", name))
    assert isinstance(data, list) and data, data
    return dict(data[0])


def host_port(name: str, port: str) -> int:
    """The loopback port podman published ``port`` ("8443/tcp") of container ``name`` on."""
    out = podman("port", name, port).strip().splitlines()[0]
    return int(out.rsplit(":", 1)[1])


def bridge_gateway() -> str:
    """The host's address on podman's default bridge: containers reach host services there."""
    data = json.loads(podman("network", "inspect", "podman"))
    return str(data[0]["subnets"][0]["gateway"])


def logs(name: str) -> str:
    proc = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout + proc.stderr


def wait_http(name: str, url: str, timeout: float = 120) -> None:
    """Poll ``url`` until 200, failing early (with the logs) when the container has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        state = inspect(name)["State"]
        if not state.get("Running"):
            raise AssertionError(f"{name} exited ({state.get('ExitCode')}):\n{logs(name)}")
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready within {timeout} s:\n{logs(name)}")
