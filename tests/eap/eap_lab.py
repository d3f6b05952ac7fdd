"""swanctl connections for the EAP tests: RFC 4739 machine certificate + user EAP, or EAP only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gw_procs import Charon, Conn, ResponderProc
from radius_lab import Credential, FreeRadius, IkepkiPki

EAP_PLUGINS = "kernel-netlink eap-identity eap-tls eap-gtc"
# the responder policy rule of the staff (machine certificate + EAP), a YAML list item
STAFF_RULE = """
  - name: staff-vpn
    match:
      radius_group: staff
    require: [pubkey, eap]
    local_ts: ["10.231.1.0/24"]
    remote_ts: ["10.231.2.0/24"]"""


@dataclass
class EapConn(Conn):
    """``client`` is the machine certificate (empty: EAP only); ``eap`` the user round."""

    eap: str = "eap-tls"
    eap_id: str = ""
    user_cert: str = ""
    aaa_id: str = "radius.example.test"
    vip: bool = False

    def options(self) -> str:
        return f"{'vips = 0.0.0.0' if self.vip else ''}\n    {self.extra}"

    def local_rounds(self) -> str:
        """RFC 4739: the machine certificate (``local-1``, if any), then the user's EAP round."""
        machine = f"""
    local-1 {{
      auth = pubkey
      certs = {self.client}.pem
      id = {self.identity}
    }}""" if self.client else ""
        return machine + f"""
    local{"-2" if self.client else ""} {{
      auth = {self.eap}
      eap_id = {self.eap_id}
      {f"certs = {self.user_cert}.pem" if self.user_cert else ""}
      {f"aaa_id = {self.aaa_id}" if self.eap == "eap-tls" else ""}
    }}"""

    def child(self, local_ts: str | None = None) -> str:
        return super().child("dynamic" if self.vip else local_ts)


@dataclass
class EapLab:
    pki: IkepkiPki
    radius: FreeRadius
    gw: ResponderProc
    badsecret: ResponderProc
    charon: Charon
    creds: dict[str, Credential]
    dir: Path
    dae_port: int
