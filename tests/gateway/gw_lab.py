"""The interop lab: PKI, responders and the charon initiator shared by one test module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gw_pki import GwPki
from gw_procs import Charon, ResponderProc

POLICY = """
role_attribute: OU
rules:
  - name: staff
    match:
      profile: 1.3.6.1.4.1.55555.1.1
      san: ["*@example.test", "DNS:*.example.test", "IP:127.0.0.1"]
      role: staff
    local_ts: ["10.231.1.0/24"]
    remote_ts: ["10.231.2.0/25"]
  - name: guests
    match:
      role: guests
    local_ts: ["10.231.9.0/24"]
    remote_ts: ["10.231.2.0/24"]
"""


@dataclass
class Lab:
    pki: GwPki
    main: ResponderProc
    nopolicy: ResponderProc
    cookie: ResponderProc
    charon: Charon
    classic: Charon  # signature_authentication = no: RFC 4754 methods 9/10/11
    dir: Path
