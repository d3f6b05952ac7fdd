"""Helpers of the posture tests: a measured boot on swtpm (PCRs 0-7 extended by the test, with the
matching TCG event log), quotes by the device AK, and tpm2-tools as an independent quote producer."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA

from enrollment.attestation.device import TpmDevice
from enrollment.posture.eventlog import (
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_SEPARATOR,
    encode_event,
    spec_id_event,
    uefi_variable,
)

SELECTION = "sha256:0,1,2,3,4,5,6,7"
PCR_HANDLES = [getattr(ESYS_TR, f"PCR{i}") for i in range(24)]


@dataclass(frozen=True)
class Boot:
    """A measured boot: the events extended (pcr, type, data) and the event log describing them."""

    events: tuple[tuple[int, int, bytes], ...]

    @property
    def log(self) -> bytes:
        return spec_id_event() + b"".join(encode_event(p, t, d) for p, t, d in self.events)

    def pcr(self, index: int) -> bytes:
        value = b"\0" * 32
        for p, _, data in self.events:
            if p == index:
                value = hashlib.sha256(value + hashlib.sha256(data).digest()).digest()
        return value


def boot(secure_boot: bool = True, firmware: bytes = b"firmware v1.2") -> Boot:
    """PCR 0 firmware, 1-6 one event each, PCR 7 the SecureBoot variable + separator (PFP §3.3.4.8)."""
    events: list[tuple[int, int, bytes]] = [(0, 0x80000008, firmware)]
    events += [(i, 0x0000000D, f"component {i}".encode()) for i in range(1, 7)]
    events.append((7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefi_variable("SecureBoot", b"\x01" if secure_boot else b"\x00")))
    events += [(i, EV_SEPARATOR, b"\0\0\0\0") for i in range(8)]
    return Boot(tuple(events))


def measure(tpm: TpmDevice, measured: Boot) -> None:
    """Extend the TPM's PCRs with the boot's events (swtpm starts at zero: a fresh 'power on' per TPM)."""
    for pcr, _, data in measured.events:
        extend(tpm, pcr, data)


def extend(tpm: TpmDevice, pcr: int, data: bytes) -> None:
    """TPM2_PCR_Extend of SHA-256(data) into one PCR (the sha256 bank)."""
    digest = TPMT_HA(hashAlg=TPM2_ALG.SHA256)
    digest.digest.sha256 = hashlib.sha256(data).digest()
    tpm._ectx.pcr_extend(PCR_HANDLES[pcr], TPML_DIGEST_VALUES([digest]))


def tools(tcti: str, cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A tpm2-tools command, then flush transient objects and sessions (no resource manager)."""
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    for flag in ("-t", "-s"):
        subprocess.run(["tpm2_flushcontext", flag], cwd=cwd, env=env, capture_output=True, check=False)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}"
    return proc


def ak_pem(tpm: TpmDevice) -> bytes:
    """The AK public key (PEM) from its TPMT_PUBLIC."""
    from tpm2_pytss.types import TPMT_PUBLIC

    area, _ = TPMT_PUBLIC.unmarshal(tpm.ak_public())
    return bytes(area.to_pem())


def pcrs_json(values: dict[int, bytes]) -> dict[str, Any]:
    return {"sha256": {str(i): v.hex() for i, v in values.items()}}


GOOD_FACTS = {"os_name": "Debian", "os_version": "12.8", "disk_encryption": True, "edr_running": True}


def write_policy(path: Path, refuse_unencrypted: bool = True) -> Path:
    """The fleet policy of the tests: the good boot's PCR 0 and PCR 7 are the reference values."""
    good = boot()
    path.write_text(f"""
pcr_selection: "sha256:0,1,2,3,4,5,6,7"
max_evidence_age_seconds: 3600
default_class: laptop
classes:
  laptop:
    pcrs:
      sha256:
        0: ["{good.pcr(0).hex()}"]
        7: ["{good.pcr(7).hex()}"]
    event_log: {{secure_boot: true}}
    facts: {{os_name: [Debian], min_os_version: "12.4", disk_encryption: true, edr_running: true}}
    on_failure: {{pcrs: quarantine, event_log: quarantine, facts: {"refused" if refuse_unencrypted else "quarantine"}}}
""")
    return path


EDR_SECRET = "whsec_" + __import__("base64").b64encode(os.urandom(32)).decode()


def write_hooks(base: Path) -> Path:
    """response.yaml: an EDR (Standard Webhooks) whose critical detections quarantine the device."""
    import yaml

    (base / "edr-secret").write_text(EDR_SECRET)
    path = base / "response.yaml"
    path.write_text(yaml.safe_dump({
        "sources": {"edr": {"format": "standard-webhooks", "secret": f"file:{base / 'edr-secret'}"}},
        "rules": [{"name": "edr-quarantine", "sources": ["edr"], "match": {"severity": "critical"},
                   "target": {"kind": "device", "field": "device"}, "action": "posture", "posture": "quarantine"}],
        "guard": {"max_certificates": 100, "max_devices": 10}}))
    return path
