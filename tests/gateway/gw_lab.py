"""The interop lab: PKI, responders and the charon initiator shared by one test module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gw_pki import TestPki
from gw_procs import Charon, ResponderProc


@dataclass
class Lab:
    pki: TestPki
    main: ResponderProc
    nopolicy: ResponderProc
    cookie: ResponderProc
    charon: Charon
    dir: Path
