"""swanctl connections for the EAP tests: RFC 4739 machine certificate + user EAP, or EAP only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gw_procs import Charon, Conn, ResponderProc
from radius_lab import Credential, FreeRadius, IkepkiPki

EAP_PLUGINS = "kernel-netlink eap-identity eap-tls eap-gtc"


@dataclass
class EapConn(Conn):
    """``client`` is the machine certificate (empty: EAP only); ``eap`` the user round."""

    eap: str = "eap-tls"
    eap_id: str = ""
    user_cert: str = ""
    aaa_id: str = "radius.example.test"
    vip: bool = False

    def render(self, remote_port: int, local_port: int) -> str:
        user = f"""
    local{"-2" if self.client else ""} {{
      auth = {self.eap}
      eap_id = {self.eap_id}
      {f"certs = {self.user_cert}.pem" if self.user_cert else ""}
      {f"aaa_id = {self.aaa_id}" if self.eap == "eap-tls" else ""}
    }}"""
        machine = f"""
    local-1 {{
      auth = pubkey
      certs = {self.client}.pem
      id = {self.identity}
    }}""" if self.client else ""
        child = f"""
    children {{
      net {{
        local_ts = {"dynamic" if self.vip else self.local_ts}
        remote_ts = {self.remote_ts}
        esp_proposals = aes256gcm16
        start_action = none
      }}
    }}"""
        return f"""
  {self.name} {{
    version = 2
    local_addrs = {self.local_addr}
    local_port = {local_port}
    remote_addrs = {self.remote_addr}
    remote_port = {remote_port}
    mobike = no
    proposals = {self.proposals}
    unique = never
    {"vips = 0.0.0.0" if self.vip else ""}
    {self.extra}{machine}{user}
    remote {{
      auth = pubkey
      id = gw.example.test
      revocation = relaxed
    }}{child}
  }}"""


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
