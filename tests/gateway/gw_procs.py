"""Real processes for interop tests: a strongSwan charon initiator (private /run mount namespace)
and the ikepki responder (``python -m gateway.cli serve``), both on loopback high ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vici

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = ("random nonce kdf aes sha1 sha2 hmac gcm chapoly curve25519 gmp openssl pem pkcs1 pkcs8 pkcs12 "
           "x509 revocation constraints pubkey curl kernel-netlink socket-default vici")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class Charon:
    """A charon daemon as IKE initiator, controlled over VICI."""

    state: Path
    port: int
    nat_port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    wrap: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", NS)
    kernel_plugins: str = "kernel-netlink"
    settings: str = ""  # extra lines for the charon { } section
    loglevels: str = "default = 1\n      ike = 2"

    @property
    def vici_path(self) -> Path:
        return self.state / "charon.vici"

    def write_config(self, conns: list[Conn], remote_port: int, certs: dict[str, tuple[bytes, bytes]],
                     cacerts: dict[str, bytes]) -> None:
        sw = self.state / "swanctl"
        for sub in ("x509", "x509ca", "private", "run"):
            (sw / sub if sub != "run" else self.state / "run").mkdir(parents=True, exist_ok=True)
        for name, (cert, key) in certs.items():
            (sw / "x509" / f"{name}.pem").write_bytes(cert)
            (sw / "private" / f"{name}.pem").write_bytes(key)
        for name, pem in cacerts.items():
            (sw / "x509ca" / f"{name}.pem").write_bytes(pem)
        (self.state / "strongswan.conf").write_text(f"""
charon {{
  load = {PLUGINS.replace("kernel-netlink", self.kernel_plugins)}
  port = {self.port}
  port_nat_t = {self.nat_port}
  install_routes = no
  install_virtual_ip = no
  retransmit_timeout = 2.0
  retransmit_base = 1.4
  retransmit_tries = 3
  {self.settings}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
  filelog {{
    tlog {{
      path = {self.state}/charon.log
      {self.loglevels}
      flush_line = yes
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{self.vici_path}
    }}
  }}
}}
swanctl {{
  socket = unix://{self.vici_path}
}}
""")
        body = "".join(c.render(remote_port, self.port) for c in conns)
        (sw / "swanctl.conf").write_text(f"connections {{{body}\n}}\n")
        self.env = {**os.environ, "STRONGSWAN_CONF": str(self.state / "strongswan.conf"), "SWANCTL_DIR": str(sw)}

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        script = f"mount --bind {self.state}/run /run && exec {CHARON}"
        self.proc = subprocess.Popen([*self.wrap, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.session().version()
                break
            time.sleep(0.02)
        else:
            raise RuntimeError("charon did not start")
        subprocess.run(["swanctl", "--load-all", "--noprompt"], env=self.env, check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def session(self) -> vici.Session:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(str(self.vici_path))
        return vici.Session(s)

    def initiate(self, ike: str, child: str | None = None, timeout_ms: int = 15000) -> tuple[bool, str]:
        """Initiate; return (success, VICI log lines + the file log written meanwhile).

        The VICI stream can miss lines of an IKE_SA that was restarted (INVALID_KE, COOKIE),
        so the daemon's own file log of the same period is appended."""
        req: dict[str, Any] = {"ike": ike, "timeout": str(timeout_ms), "loglevel": "2"}
        if child:
            req["child"] = child
        mark = len(self.log())
        lines: list[str] = []
        ok = True
        try:
            for msg in self.session().initiate(req):
                lines.append(msg.get("msg", b"").decode(errors="replace"))
        except vici.exception.CommandException as exc:
            lines.append(f"FAILED: {exc}")
            ok = False
        time.sleep(0.05)  # let the file log catch up
        return ok, "\n".join(lines) + "\n--- charon.log ---\n" + self.log()[mark:]

    def list_sas(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in self.session().list_sas():
            for name, sa in entry.items():
                out[f"{name}#{sa['uniqueid'].decode()}"] = sa
        return out

    def sas_of(self, conn: str) -> list[dict[str, Any]]:
        return [sa for key, sa in self.list_sas().items() if key.split("#")[0] == conn]

    def terminate(self, ike: str) -> None:
        with contextlib.suppress(vici.exception.CommandException):
            for _ in self.session().terminate({"ike": ike, "timeout": "3000"}):
                pass

    def rekey(self, ike: str) -> None:
        self.session().rekey({"ike": ike})

    def log(self) -> str:
        p = self.state / "charon.log"
        return p.read_text(errors="replace") if p.exists() else ""


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
