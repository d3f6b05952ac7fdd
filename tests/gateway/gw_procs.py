"""Real processes for interop tests: a strongSwan charon initiator (:mod:`tests.swan_harness`, private
/run mount namespace) and the ikepki responder (``python -m gateway.cli serve``), on loopback high ports;
and :class:`NetnsLab`, ``ikepki serve`` with the bundled responder (``ikepki responder serve``) in a network
namespace of the test's own, for the end-to-end suites (e2e acceptance, posture at the gateway)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import conftest, swan_harness
from tests.swan_harness import PLUGINS, Netns, await_ready, free_port, stop_process, wait_until

__all__ = ["PLUGINS", "Charon", "Conn", "NetnsLab", "ResponderProc", "free_port", "free_udp_pair", "netns_lab",
           "start_bundled_responder", "start_ikepki"]


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
    {self.options()}{self.local_rounds()}
    remote {{
      auth = pubkey
      id = gw.example.test
      revocation = relaxed
    }}{self.child()}
  }}"""

    def options(self) -> str:
        """Further lines of the connection (``extra``)."""
        return self.extra

    def local_rounds(self) -> str:
        """The ``local`` authentication round(s): the certificate."""
        return f"""
    local {{
      auth = {self.auth}
      certs = {self.client}.pem
      id = {self.identity}
    }}"""

    def child(self, local_ts: str | None = None) -> str:
        """The CHILD_SA ``net`` (none without ``children``)."""
        return (f"""
    children {{
      net {{
        local_ts = {local_ts or self.local_ts}
        remote_ts = {self.remote_ts}
        esp_proposals = aes256gcm16
        start_action = none
      }}
    }}""" if self.children else "")


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
        await_ready(self.proc, lambda: self.control_get("/healthz") == {"ok": True}, what="responder", timeout=15,
                    log=(self.state / "stderr.log").read_text)

    def stop(self) -> None:
        stop_process(self.proc)

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


# -- ikepki serve + the bundled responder in a network namespace -------------------------------------

def _tcp_port() -> int:
    return conftest.free_port()


@dataclass
class NetnsLab:
    """One network namespace (``10.231.2.1/32`` on its loopback: the initiator's local selector must hold a
    local address of a kernel-libipsec charon, strongswan note §2) running the processes of an end-to-end
    test: ``ikepki serve`` on ``https_port``/``http_port``, the bundled responder on ``ike_port`` (push API
    on ``push_port``), and what the suite adds with :meth:`start`."""

    netns: Netns
    dir: Path  # the ikepki deployment
    work: Path  # logs, keys, policy, events
    https_port: int = field(default_factory=_tcp_port)
    http_port: int = field(default_factory=_tcp_port)
    http01_port: int = field(default_factory=_tcp_port)
    push_port: int = field(default_factory=_tcp_port)
    ike_port: int = field(default_factory=_tcp_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    charon: Charon | None = None

    @property
    def wrap(self) -> tuple[str, ...]:
        return self.netns.wrap

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The test's environment without the session token's SoftHSM config (the deployment has its own)."""
        full = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        full.update(extra or {})
        return full

    def run(self, *cmd: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.wrap, *cmd], capture_output=True, text=True, env=self.env(env), timeout=timeout,
                              check=False, cwd=self.work)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, name: str, *cmd: str, env: dict[str, str] | None = None) -> None:
        """Start ``cmd`` in the namespace, in a session of its own, output to ``work/<name>.log``."""
        with (self.work / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen([*self.wrap, *cmd], stdout=log, stderr=subprocess.STDOUT,
                                                env=self.env(env), cwd=self.work, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def responder_sas(self) -> list[dict[str, Any]]:
        out = self.run(conftest.IKEPKI, "responder", "sas", "--json", "--url", f"http://127.0.0.1:{self.push_port}")
        data = json.loads(out.stdout)
        return list(data["sas"] if isinstance(data, dict) else data)

    def events(self) -> list[dict[str, Any]]:
        path = self.work / "events.jsonl"
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []

    def close(self) -> None:
        if self.charon is not None:
            self.charon.stop()
        for proc in self.procs.values():
            stop_process(proc, group=True, timeout=10)


LabT = TypeVar("LabT", bound=NetnsLab)


@contextlib.contextmanager
def netns_lab(cls: type[LabT], base: Path, prefix: str) -> Iterator[LabT]:
    """A :class:`NetnsLab` (or subclass) in namespace ``<prefix>-<pid>`` with ``base/ikepki`` and
    ``base/work``; every process it started is stopped and the namespace deleted on exit."""
    with Netns(f"{prefix}-{os.getpid()}", lo_addrs=["10.231.2.1/32"]) as netns:
        lab = cls(netns, base / "ikepki", base / "work")
        try:
            lab.work.mkdir()
            yield lab
        finally:
            lab.close()


def start_ikepki(lab: NetnsLab, env: dict[str, str] | None = None) -> None:
    """``ikepki serve`` on the lab's deployment (public base URL: its HTTP port) until /healthz answers."""
    lab.start("ikepki", conftest.IKEPKI, "serve", "--dir", str(lab.dir), "--https-port", str(lab.https_port),
              "--http-port", str(lab.http_port),
              env={"IKEPKI_PUBLIC_BASE_URL": f"http://127.0.0.1:{lab.http_port}", **(env or {})})
    assert wait_until(lambda: lab.run("curl", "-sf", f"http://127.0.0.1:{lab.http_port}/healthz",
                                      check=False).stdout == "ok\n", 60), lab.log("ikepki")


def start_bundled_responder(lab: NetnsLab, policy: str) -> None:
    """The bundled responder as ``gw.example.test`` (a ``gateway`` certificate ``ikepki issue`` signs;
    chains, OCSP strict against ``ikepki serve``, ``policy`` YAML), registered with ``ikepki gateways
    add`` so revocations are pushed to it."""
    key = ec.generate_private_key(ec.SECP256R1())
    (lab.work / "gw.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw.example.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.example.test")]), critical=False)
           .sign(key, hashes.SHA256()))
    (lab.work / "gw.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    conftest.run_ikepki("issue", "--csr", str(lab.work / "gw.csr"), "--profile", "gateway", "--out",
                        str(lab.work / "gw.pem"), directory=lab.dir)
    bundle = b"".join((lab.dir / p).read_bytes() for p in ("root-ca.pem", "ca/ec.pem", "ca/rsa.pem"))
    (lab.work / "bundle.pem").write_bytes(bundle)
    (lab.work / "policy.yaml").write_text(policy)
    lab.start("responder", conftest.IKEPKI, "responder", "serve", "--listen", f"127.0.0.1:{lab.ike_port}",
              "--cert", str(lab.work / "gw.pem"), "--key", str(lab.work / "gw.key"),
              "--ca-bundle", str(lab.work / "bundle.pem"), "--policy", str(lab.work / "policy.yaml"),
              "--push-listen", f"127.0.0.1:{lab.push_port}", "--push-insecure-http",
              "--control", str(lab.work / "control.sock"),
              "--event-log", str(lab.work / "events.jsonl"), "--ocsp", "strict", "--local-id", "gw.example.test")
    assert wait_until(lambda: '"ok"' in lab.run("curl", "-s", f"http://127.0.0.1:{lab.push_port}/healthz",
                                                  check=False).stdout, 20), lab.log("responder")
    # checked from inside the namespace, where ikepki serve (the push worker) runs
    lab.run(conftest.IKEPKI, "gateways", "add", "--name", "bundled-responder", "--kind", "responder", "--url",
            f"http://127.0.0.1:{lab.push_port}", "--dir", str(lab.dir))
