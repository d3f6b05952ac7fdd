"""The one strongSwan harness of the interop tests: a charon daemon with its own state directory, a
private ``/run`` (its own mount namespace, strongswan.md §1), optionally inside a network namespace
(``wrap``), configured by writing ``strongswan.conf`` and ``swanctl/`` and controlled over VICI.

The suites build their connections as swanctl.conf snippets (``tests/gateway/gw_procs.Conn``,
``tests/incident/swan.gateway_conf``/``client_conf``, ``tests/ocsp/swan.gateway_conn``/``client_conn``)
and hand them to :meth:`Charon.configure` with the files they need, so a suite adds a connection kind
(EAP, PSK, …) without touching the daemon's lifecycle here. Daemon-wide options go in ``settings``
(lines of ``charon { }``) and ``plugin_settings`` (``charon.plugins.<name> { }``).

The process plumbing every interop lab shares lives here too: :class:`Netns` (a network namespace of the
test's own, :func:`veth` to join two), :func:`await_ready` (start-up wait that fails with the daemon's log
when it exits), :func:`stop_process` (TERM, then KILL) and :func:`wait_until` (a readiness poll)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import vici

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = ("random nonce kdf aes sha1 sha2 hmac gcm chapoly curve25519 gmp openssl pem pkcs1 pkcs8 pkcs12 "
           "x509 revocation constraints pubkey curl kernel-netlink socket-default vici")
SWANCTL_DIRS = ("x509", "x509ca", "x509crl", "private")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes ------------------------------------------------------------------------------------

def wait_until(pred: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll ``pred`` until it is truthy; return its last value (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(step)
    return pred()


def await_ready(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, what: str, timeout: float,
                log: Callable[[], str] = lambda: "", step: float = 0.05,
                errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> None:
    """Wait until ``ready()`` holds (``errors`` it raises count as not yet) while ``proc`` runs; raise
    ``RuntimeError`` with the tail of ``log()`` when the process exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*errors):
            if ready():
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{log()[-4000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log()[-4000:]}")
        time.sleep(step)


def stop_process(proc: subprocess.Popen[bytes] | None, *, group: bool = False, timeout: float = 5.0) -> None:
    """SIGTERM (the whole process group with ``group``: a process started with ``start_new_session``),
    SIGKILL if it has not exited after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(5)


# -- network namespaces -----------------------------------------------------------------------------

def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Netns:
    """A network namespace of the test's own (``ip netns``): loopback up, ``lo_addrs`` (``a.b.c.d/nn``)
    added to it; :meth:`delete` (or leaving the ``with`` block) removes it. Names must be unique on
    the machine: give a prefix of the suite and a per-run tag (pid or random)."""

    def __init__(self, name: str, lo_addrs: Iterable[str] = ()) -> None:
        self.name = name
        self.lo_addrs = tuple(lo_addrs)

    @property
    def wrap(self) -> tuple[str, ...]:
        """The command prefix that runs a program inside the namespace."""
        return ("ip", "netns", "exec", self.name)

    def create(self) -> Netns:
        ip("netns", "add", self.name)
        try:
            ip("-n", self.name, "link", "set", "lo", "up")
            for addr in self.lo_addrs:
                ip("-n", self.name, "addr", "add", addr, "dev", "lo")
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()


def veth(a: Netns, a_dev: str, a_addr: str, b: Netns, b_dev: str, b_addr: str) -> None:
    """Join two namespaces by a veth pair (``a_dev`` in ``a``, ``b_dev`` in ``b``; addresses ``x/nn``), links up."""
    ip("link", "add", a_dev, "netns", a.name, "type", "veth", "peer", "name", b_dev, "netns", b.name)
    for ns, dev, addr in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
        ip("-n", ns.name, "addr", "add", addr, "dev", dev)
        ip("-n", ns.name, "link", "set", dev, "up")


class Charon:
    """One charon daemon (IKE initiator or responder) controlled over VICI."""

    def __init__(self, state: Path, *, name: str = "charon", wrap: tuple[str, ...] = (), port: int | None = None,
                 nat_port: int | None = None, plugins: str = PLUGINS, settings: str = "",
                 plugin_settings: Mapping[str, str] | None = None, loglevels: str = "default = 1",
                 retransmit: tuple[float, float, int] = (2.0, 1.4, 3), own_session: bool = False) -> None:
        self.state = state
        self.name = name
        self.wrap = tuple(wrap)  # e.g. ("ip", "netns", "exec", NS)
        self.port = port
        self.nat_port = nat_port
        self.plugins = plugins
        self.settings = settings  # extra lines for the charon { } section
        self.plugin_settings = dict(plugin_settings or {})
        self.loglevels = loglevels
        self.retransmit = retransmit
        self.own_session = own_session  # start in a new session; stop signals the whole process group
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration ----------------------------------------------------------------------------

    @property
    def vici_path(self) -> Path:
        return self.state / "charon.vici"

    @property
    def vici_url(self) -> str:
        return f"unix://{self.vici_path}"

    @property
    def swanctl_dir(self) -> Path:
        return self.state / "swanctl"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "STRONGSWAN_CONF": str(self.state / "strongswan.conf"),
                "SWANCTL_DIR": str(self.swanctl_dir)}

    def configure(self, swanctl_conf: str, files: Mapping[str, bytes] = {}) -> None:
        """Write strongswan.conf, ``swanctl/swanctl.conf`` and ``files`` (paths relative to ``swanctl/``,
        e.g. ``x509/alice.pem``, ``private/alice.pem``, ``x509ca/root.pem``)."""
        for sub in SWANCTL_DIRS:
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state / "run").mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():
            (self.swanctl_dir / rel).write_bytes(data)
        (self.swanctl_dir / "swanctl.conf").write_text(swanctl_conf)
        (self.state / "strongswan.conf").write_text(self.strongswan_conf())

    def strongswan_conf(self) -> str:
        ports = "".join(f"\n  {key} = {value}" for key, value in (("port", self.port), ("port_nat_t", self.nat_port))
                        if value is not None)
        timeout, base, tries = self.retransmit
        plugins = "".join(f"\n    {name} {{\n      {body}\n    }}" for name, body in self.plugin_settings.items())
        return f"""
charon {{
  load = {self.plugins}{ports}
  install_routes = no
  install_virtual_ip = no
  retransmit_timeout = {timeout}
  retransmit_base = {base}
  retransmit_tries = {tries}
  {self.settings}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
  filelog {{
    log {{
      path = {self.state}/charon.log
      {self.loglevels}
      flush_line = yes
    }}
  }}
  plugins {{
    vici {{
      socket = {self.vici_url}
    }}{plugins}
  }}
}}
swanctl {{
  socket = {self.vici_url}
}}
"""

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 20) -> None:
        """Start charon (private /run) and load the swanctl configuration."""
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        script = f"mount --bind {self.state}/run /run && exec {CHARON}"
        self.proc = subprocess.Popen([*self.wrap, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=self.own_session)
        await_ready(self.proc, lambda: bool(self.session().version()), what=f"charon {self.name}", timeout=timeout,
                    log=self.log, step=0.02, errors=(OSError,))
        self.swanctl("--load-all", "--noprompt")

    def stop(self) -> None:
        stop_process(self.proc, group=self.own_session)

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """swanctl against this daemon (over its VICI socket, reachable from any network namespace)."""
        proc = subprocess.run(["swanctl", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"swanctl {' '.join(args)} ({self.name}) failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def log(self) -> str:
        path = self.state / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- VICI -------------------------------------------------------------------------------------

    def session(self) -> vici.Session:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(str(self.vici_path))
        return vici.Session(s)

    def initiate(self, ike: str, child: str | None = None, timeout_ms: int = 15000, loglevel: int = 2,
                 with_file_log: bool = True) -> tuple[bool, str]:
        """Initiate; return (success, VICI log lines [+ the file log written meanwhile]).

        The VICI stream can miss lines of an IKE_SA that was restarted (INVALID_KE, COOKIE),
        so by default the daemon's own file log of the same period is appended."""
        req: dict[str, Any] = {"ike": ike, "timeout": str(timeout_ms), "loglevel": str(loglevel)}
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
        if not with_file_log:
            return ok, "\n".join(lines)
        time.sleep(0.05)  # let the file log catch up
        return ok, "\n".join(lines) + "\n--- charon.log ---\n" + self.log()[mark:]

    def list_sas(self, noblock: bool = False) -> dict[str, dict[str, Any]]:
        """IKE SAs by ``<connection>#<unique id>`` (raw VICI values); ``noblock`` skips SAs in use."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.session().list_sas({"noblock": "yes"} if noblock else {}):
            for name, sa in entry.items():
                out[f"{name}#{sa['uniqueid'].decode()}"] = sa
        return out

    def sas_of(self, conn: str) -> list[dict[str, Any]]:
        return [sa for key, sa in self.list_sas().items() if key.split("#")[0] == conn]

    def ike_sas(self) -> list[dict[str, Any]]:
        """IKE SAs with their top-level values decoded to str."""
        return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in sa.items()}
                for sa in self.list_sas(noblock=True).values()]

    def established(self, remote_id: str | None = None) -> list[dict[str, Any]]:
        return [sa for sa in self.ike_sas() if sa.get("state") == "ESTABLISHED"
                and (remote_id is None or sa.get("remote-id") == remote_id)]

    def terminate(self, ike: str) -> None:
        with contextlib.suppress(vici.exception.CommandException):
            for _ in self.session().terminate({"ike": ike, "timeout": "3000"}):
                pass

    def rekey(self, ike: str) -> None:
        self.session().rekey({"ike": ike})
