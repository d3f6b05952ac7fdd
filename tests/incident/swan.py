"""A real strongSwan gateway and client, each charon in its own network namespace (veth pair)
and private mount namespace (strongswan.md §1), controlled over VICI. Childless IKE SAs only:
this kernel has no ESP (strongswan.md §2)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vici

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = ("random nonce kdf aes sha1 sha2 hmac gcm chapoly curve25519 gmp openssl pem pkcs1 pkcs8 pkcs12 "
           "x509 revocation constraints pubkey curl kernel-netlink socket-default vici")
GW_ID = "gw.example.test"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


@dataclass
class Netns:
    """Two namespaces joined by a veth pair: gateway 10.231.<n>.1, client 10.231.<n>.2."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    net: int = field(default_factory=lambda: 1 + secrets.randbelow(250))

    @property
    def gw(self) -> str:
        return f"ikgw-{self.tag}"

    @property
    def cl(self) -> str:
        return f"ikcl-{self.tag}"

    @property
    def gw_addr(self) -> str:
        return f"10.231.{self.net}.1"

    @property
    def cl_addr(self) -> str:
        return f"10.231.{self.net}.2"

    def create(self) -> None:
        sh("ip", "netns", "add", self.gw)
        sh("ip", "netns", "add", self.cl)
        sh("ip", "link", "add", f"vg{self.tag}", "netns", self.gw, "type", "veth", "peer", "name", f"vc{self.tag}",
           "netns", self.cl)
        for ns, dev, addr in ((self.gw, f"vg{self.tag}", self.gw_addr), (self.cl, f"vc{self.tag}", self.cl_addr)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def delete(self) -> None:
        for ns in (self.gw, self.cl):
            sh("ip", "netns", "del", ns, check=False)


@dataclass
class Charon:
    """One charon: ``state`` holds strongswan.conf, swanctl/ and the VICI socket."""

    name: str
    state: Path
    netns: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def vici_path(self) -> Path:
        return self.state / "charon.vici"

    @property
    def vici_url(self) -> str:
        return f"unix://{self.vici_path}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "STRONGSWAN_CONF": str(self.state / "strongswan.conf"),
                "SWANCTL_DIR": str(self.state / "swanctl")}

    def configure(self, swanctl_conf: str, files: dict[str, bytes], extra: str = "") -> None:
        sw = self.state / "swanctl"
        for sub in ("x509", "x509ca", "private", "x509crl"):
            (sw / sub).mkdir(parents=True, exist_ok=True)
        (self.state / "run").mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():
            (sw / rel).write_bytes(data)
        (sw / "swanctl.conf").write_text(swanctl_conf)
        (self.state / "strongswan.conf").write_text(f"""
charon {{
  load = {PLUGINS}
  install_routes = no
  install_virtual_ip = no
  retransmit_timeout = 1.0
  retransmit_base = 1.4
  retransmit_tries = 2
  {extra}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
  filelog {{
    log {{
      path = {self.state}/charon.log
      default = 1
      cfg = 2
      ike = 1
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

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        script = f"mount --bind {self.state}/run /run && exec {CHARON}"
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
                                      "private", "sh", "-c", script], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.session().version()
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"charon {self.name} exited: {self.log()[-2000:]}")
            time.sleep(0.02)
        else:
            raise RuntimeError(f"charon {self.name} did not start")
        proc = subprocess.run(["swanctl", "--load-all", "--noprompt"], env=self.env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"swanctl --load-all ({self.name}): {proc.stdout}\n{proc.stderr}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def log(self) -> str:
        path = self.state / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def session(self) -> vici.Session:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(str(self.vici_path))
        return vici.Session(s)

    def initiate(self, ike: str, timeout_ms: int = 8000) -> tuple[bool, str]:
        lines: list[str] = []
        try:
            for msg in self.session().initiate({"ike": ike, "timeout": str(timeout_ms), "loglevel": "1"}):
                lines.append(msg.get("msg", b"").decode(errors="replace"))
            return True, "\n".join(lines)
        except vici.exception.CommandException as exc:
            lines.append(f"FAILED: {exc}")
            return False, "\n".join(lines)

    def ike_sas(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.session().list_sas({"noblock": "yes"}):
            for _name, sa in entry.items():
                out.append({k: (v.decode() if isinstance(v, bytes) else v) for k, v in sa.items()})
        return out

    def established(self, remote_id: str | None = None) -> list[dict[str, Any]]:
        return [sa for sa in self.ike_sas() if sa.get("state") == "ESTABLISHED"
                and (remote_id is None or sa.get("remote-id") == remote_id)]


def gateway_conf(addr: str, revocation: str = "relaxed") -> str:
    return f"""connections {{
  rw {{
    version = 2
    local_addrs = {addr}
    mobike = no
    proposals = aes256gcm16-prfsha256-ecp256
    local {{
      auth = pubkey
      certs = gw.pem
      id = {GW_ID}
    }}
    remote {{
      auth = pubkey
      revocation = {revocation}
    }}
  }}
}}
"""


def client_conf(local: str, remote: str, identity: str, cert: str = "client.pem") -> str:
    return f"""connections {{
  vpn {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    mobike = no
    proposals = aes256gcm16-prfsha256-ecp256
    local {{
      auth = pubkey
      certs = {cert}
      id = {identity}
    }}
    remote {{
      auth = pubkey
      id = {GW_ID}
      revocation = relaxed
    }}
  }}
}}
"""


_LISTENER = """
import os, socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(64)
socket.send_fds(socket.socket(fileno=int(sys.argv[2])), [b"x"], [ls.fileno()])
"""


class PortIntoNetns:
    """Make ``127.0.0.1:<port>`` inside a network namespace reach ``127.0.0.1:<target>`` on the
    host: a helper bound inside the namespace hands its listening socket back over a socketpair
    (SCM_RIGHTS); this process accepts on it and connects out in the host namespace. So the
    gateway can reach the OCSP/CRL URLs (``http://127.0.0.1:8080/…``) printed in certificates."""

    def __init__(self, netns: str, port: int, target: int) -> None:
        import sys

        self.target = target
        ours, theirs = socket.socketpair()
        subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", _LISTENER, str(port),
                        str(theirs.fileno())], pass_fds=[theirs.fileno()], check=True, timeout=30)
        theirs.close()
        _, fds, _, _ = socket.recv_fds(ours, 16, 1)
        ours.close()
        self.listener = socket.socket(fileno=fds[0])
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
