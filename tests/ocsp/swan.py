"""The revocation tests' use of :mod:`tests.swan_harness`: charon daemons (each with a private /run,
strongswan.md §1) inside one network namespace that also runs `ikepki ocsp serve` on
127.0.0.1:8080, the default public base URL the session deployment's certificates point at."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests import swan_harness
from tests.swan_harness import CHARON, Netns


def require_lab() -> None:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare") or not Path(CHARON).exists() \
            or not shutil.which("swanctl"):
        pytest.fail("strongSwan tests need root, iproute2, unshare, charon and swanctl (make setup)")


def netns() -> Netns:
    """A namespace of its own for one module's lab (loopback up)."""
    return Netns(f"ikp-ocsp-{uuid.uuid4().hex[:8]}").create()


class Charon(swan_harness.Charon):
    """charon + swanctl in ``netns`` (:class:`tests.swan_harness.Charon`) with its own state directory,
    VICI socket and ``charon.plugins.revocation`` lines."""

    def __init__(self, state: Path, netns: Netns, port: int, revocation: str = "") -> None:
        super().__init__(state, name=state.name, wrap=tuple(netns.wrap), port=port, nat_port=port + 1,
                         plugin_settings={"revocation": revocation}, retransmit=(1.0, 1.8, 2),
                         loglevels="default = 1\n      cfg = 2\n      lib = 2")
        self.netns = netns

    def configure(self, connections: str, cert: tuple[bytes, bytes],  # type: ignore[override]
                  cacerts: dict[str, bytes]) -> None:
        files = {"x509/me.pem": cert[0], "private/me.pem": cert[1],
                 **{f"x509ca/{name}.pem": pem for name, pem in cacerts.items()}}
        # the issuing CAs' status comes from the root CA's OCSP answers (their certs carry no OCSP URL)
        authorities = ("authorities {\n  ikepki-root {\n    cacert = root.pem\n"
                       "    ocsp_uris = http://127.0.0.1:8080/ocsp\n  }\n}\n")
        super().configure(f"connections {{\n{connections}\n}}\n{authorities}", files)


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
