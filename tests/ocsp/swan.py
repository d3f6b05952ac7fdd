"""A small strongSwan harness for the revocation tests: charon daemons (each with a private /run,
strongswan.md §1) inside one network namespace that also runs `ikepki ocsp serve` on
127.0.0.1:8080, the default public base URL the session deployment's certificates point at."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = ("random nonce kdf aes sha1 sha2 hmac gcm chapoly curve25519 gmp openssl pem pkcs1 pkcs8 pkcs12 x509 "
           "revocation constraints pubkey curl kernel-netlink socket-default vici")


def require_lab() -> None:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare") or not Path(CHARON).exists() \
            or not shutil.which("swanctl"):
        pytest.fail("strongSwan tests need root, iproute2, unshare, charon and swanctl (make setup)")


@dataclass
class Netns:
    name: str = field(default_factory=lambda: f"ikp-ocsp-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    @property
    def wrap(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


@dataclass
class Charon:
    """charon + swanctl in ``netns`` with its own state directory and VICI socket."""

    state: Path
    netns: Netns
    port: int
    revocation: str = ""  # extra lines for charon.plugins.revocation
    proc: subprocess.Popen[bytes] | None = None

    @property
    def swanctl_dir(self) -> Path:
        return self.state / "swanctl"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "STRONGSWAN_CONF": str(self.state / "strongswan.conf"),
                "SWANCTL_DIR": str(self.swanctl_dir)}

    def configure(self, connections: str, cert: tuple[bytes, bytes], cacerts: dict[str, bytes]) -> None:
        for sub in ("x509", "x509ca", "private"):
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state / "run").mkdir(exist_ok=True)
        (self.swanctl_dir / "x509" / "me.pem").write_bytes(cert[0])
        (self.swanctl_dir / "private" / "me.pem").write_bytes(cert[1])
        for name, pem in cacerts.items():
            (self.swanctl_dir / "x509ca" / f"{name}.pem").write_bytes(pem)
        vici = f"unix://{self.state}/charon.vici"
        (self.state / "strongswan.conf").write_text(f"""
charon {{
  load = {PLUGINS}
  port = {self.port}
  port_nat_t = {self.port + 1}
  install_routes = no
  retransmit_tries = 2
  retransmit_timeout = 1.0
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
      lib = 2
      flush_line = yes
    }}
  }}
  plugins {{
    vici {{
      socket = {vici}
    }}
    revocation {{
      {self.revocation}
    }}
  }}
}}
swanctl {{
  socket = {vici}
}}
""")
        # the issuing CAs' status comes from the root CA's OCSP answers (their certs carry no OCSP URL)
        authorities = ("authorities {\n  ikepki-root {\n    cacert = root.pem\n"
                       "    ocsp_uris = http://127.0.0.1:8080/ocsp\n  }\n}\n")
        (self.swanctl_dir / "swanctl.conf").write_text(f"connections {{\n{connections}\n}}\n{authorities}")

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state / "charon.vici").unlink()
        script = f"mount --bind {self.state}/run /run && exec {CHARON}"
        self.proc = subprocess.Popen([*self.netns.wrap, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      script], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while self.swanctl("--version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"charon did not start:\n{self.log()}")
            time.sleep(0.05)
        self.swanctl("--load-all", "--noprompt")

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.netns.wrap, "swanctl", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"swanctl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def log(self) -> str:
        path = self.state / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def gateway_conn(name: str, remote_port: int) -> str:
    """The responder side: pubkey auth with `revocation = strict` on the initiator's chain."""
    del remote_port
    return f"""
  {name} {{
    version = 2
    local_addrs = 127.0.0.1
    remote_addrs = 127.0.0.1
    mobike = no
    proposals = aes256gcm16-prfsha256-ecp256
    local {{
      auth = pubkey
      certs = me.pem
      id = gw.ocsp.example.test
    }}
    remote {{
      auth = pubkey
      revocation = strict
    }}
  }}"""


def client_conn(name: str, local_port: int, remote_port: int, my_id: str) -> str:
    return f"""
  {name} {{
    version = 2
    local_addrs = 127.0.0.1
    local_port = {local_port}
    remote_addrs = 127.0.0.1
    remote_port = {remote_port}
    mobike = no
    proposals = aes256gcm16-prfsha256-ecp256
    local {{
      auth = pubkey
      certs = me.pem
      id = {my_id}
    }}
    remote {{
      auth = pubkey
      id = gw.ocsp.example.test
    }}
  }}"""
