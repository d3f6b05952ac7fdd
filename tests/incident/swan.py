"""A real strongSwan gateway and client, each charon (:mod:`tests.swan_harness`) in its own network
namespace (veth pair) and private mount namespace (strongswan.md §1), controlled over VICI. Childless IKE SAs only:
this kernel has no ESP (strongswan.md §2)."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests import swan_harness

GW_ID = "gw.example.test"


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
        gw = swan_harness.Netns(self.gw).create()
        try:
            cl = swan_harness.Netns(self.cl).create()
            swan_harness.veth(gw, f"vg{self.tag}", f"{self.gw_addr}/24", cl, f"vc{self.tag}", f"{self.cl_addr}/24")
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        for ns in (self.gw, self.cl):
            swan_harness.Netns(ns).delete()


class Charon(swan_harness.Charon):
    """One charon in network namespace ``netns`` (:class:`tests.swan_harness.Charon`): ``state`` holds
    strongswan.conf, swanctl/ and the VICI socket."""

    def __init__(self, name: str, state: Path, netns: str) -> None:
        super().__init__(state, name=name, wrap=("ip", "netns", "exec", netns), retransmit=(1.0, 1.4, 2),
                         loglevels="default = 1\n      cfg = 2\n      ike = 1", own_session=True)
        self.netns = netns

    def configure(self, swanctl_conf: str, files: Mapping[str, bytes] = {}, extra: str = "") -> None:
        self.settings = extra
        super().configure(swanctl_conf, files)

    def initiate(self, ike: str, child: str | None = None, timeout_ms: int = 8000, loglevel: int = 1,
                 with_file_log: bool = False) -> tuple[bool, str]:
        return super().initiate(ike, child, timeout_ms, loglevel, with_file_log)


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
