"""Real processes for interop tests: a strongSwan charon initiator (:mod:`tests.swan_harness`, private
/run mount namespace) and the ikepki responder (``python -m gateway.cli serve``), on loopback high ports."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import swan_harness
from tests.swan_harness import PLUGINS, free_port

__all__ = ["PLUGINS", "Charon", "Conn", "ResponderProc", "free_port", "free_udp_pair"]


def free_udp_pair() -> tuple[int, int]:
    a, b = free_port(), free_port()
    while b == a:
        b = free_port()
    return a, b


@dataclass
class Conn:
    """One swanctl connection of the initiator."""

    name: str
    client: str  # file stem under x509/ and private/
    identity: str
    proposals: str = "default"
    children: bool = True
    auth: str = "pubkey"
    mobike: bool = False
    local_addr: str = "127.0.0.1"
    remote_addr: str = "127.0.0.1"
    local_ts: str = "10.231.2.0/24"
    remote_ts: str = "10.231.1.0/24"
    extra: str = ""

    def render(self, remote_port: int, local_port: int) -> str:
        child = (f"""
    children {{
      net {{
        local_ts = {self.local_ts}
        remote_ts = {self.remote_ts}
        esp_proposals = aes256gcm16
        start_action = none
      }}
    }}""" if self.children else "")
        return f"""
  {self.name} {{
    version = 2
    local_addrs = {self.local_addr}
    local_port = {local_port}
    remote_addrs = {self.remote_addr}
    remote_port = {remote_port}
    mobike = {"yes" if self.mobike else "no"}
    proposals = {self.proposals}
    unique = never
    {self.extra}
    local {{
      auth = {self.auth}
      certs = {self.client}.pem
      id = {self.identity}
    }}
    remote {{
      auth = pubkey
      id = gw.example.test
      revocation = relaxed
    }}{child}
  }}"""


class Charon(swan_harness.Charon):
    """A charon daemon as IKE initiator (:class:`tests.swan_harness.Charon`) with :class:`Conn` connections."""

    def __init__(self, state: Path, port: int, nat_port: int, wrap: tuple[str, ...] = (),
                 kernel_plugins: str = "kernel-netlink", settings: str = "",
                 loglevels: str = "default = 1\n      ike = 2") -> None:
        super().__init__(state, name="initiator", wrap=wrap, port=port, nat_port=nat_port,
                         plugins=PLUGINS.replace("kernel-netlink", kernel_plugins), settings=settings,
                         loglevels=loglevels, retransmit=(2.0, 1.4, 3))

    def write_config(self, conns: list[Conn], remote_port: int, certs: dict[str, tuple[bytes, bytes]],
                     cacerts: dict[str, bytes]) -> None:
        files = {f"x509ca/{name}.pem": pem for name, pem in cacerts.items()}
        for name, (cert, key) in certs.items():
            files[f"x509/{name}.pem"], files[f"private/{name}.pem"] = cert, key
        assert self.port is not None
        body = "".join(c.render(remote_port, self.port) for c in conns)
        self.configure(f"connections {{{body}\n}}\n", files)


@dataclass
class ResponderProc:
    """``python -m gateway.cli serve`` as a child process."""

    state: Path
    port: int
    push_port: int
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"
    verify: Any = True
    wrap: tuple[str, ...] = ()
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.push_port}"

    @property
    def control(self) -> Path:
        return self.state / "control.sock"

    @property
    def events_path(self) -> Path:
        return self.state / "events.jsonl"

    def start(self) -> None:
        cmd = [*self.wrap, sys.executable, "-m", "gateway.cli", "serve", "--listen", f"{self.host}:{self.port}",
               "--push-listen", f"127.0.0.1:{self.push_port}", "--control", str(self.control),
               "--event-log", str(self.events_path), *([] if self.scheme == "https" else ["--push-insecure-http"]),
               *self.args]
        with open(self.state / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                         cwd=Path(__file__).resolve().parents[2])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.state / "stderr.log").read_text())
            with contextlib.suppress(OSError, ValueError):
                if self.control_get("/healthz") == {"ok": True}:
                    return
            time.sleep(0.05)
        raise RuntimeError("responder did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def control_get(self, path: str, method: str = "GET", body: bytes = b"") -> dict[str, Any]:
        """HTTP over the Unix control socket (reachable from any network namespace)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.control))
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return dict(json.loads(data.partition(b"\r\n\r\n")[2]))

    def sas(self) -> list[dict[str, Any]]:
        return list(self.control_get("/v1/sas")["sas"])

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()]
