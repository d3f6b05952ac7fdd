"""Device side of posture: the self-reported facts and the boot event log the agent sends.

Facts are what the device *says* about itself (bound into the quote, so they cannot be changed in
transit or replayed, but a compromised OS can lie): ``os_name``/``os_version`` from os-release
(freedesktop os-release ``NAME``/``VERSION_ID``), ``disk_encryption`` (a dm-crypt mapping exists:
``/sys/block/dm-*/dm/uuid`` starting with ``CRYPT-``), ``edr_running`` (one of the configured process
names runs), plus anything from a JSON facts file (a management agent can write it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enrollment.posture.evidence import MAX_EVENT_LOG, canonical_facts

EVENT_LOG_PATH = Path("/sys/kernel/security/tpm0/binary_bios_measurements")


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text()[:16384]
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def disk_encrypted(sys_block: Path = Path("/sys/block")) -> bool:
    try:
        return any(p.read_text().startswith("CRYPT-") for p in sys_block.glob("dm-*/dm/uuid"))
    except OSError:
        return False


def process_running(names: Sequence[str], proc: Path = Path("/proc")) -> bool:
    wanted = set(names)
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in wanted:
                return True
        except OSError:
            continue
    return False


def collect_facts(edr_processes: Sequence[str] = (), facts_file: Path | None = None) -> dict[str, Any]:
    release = os_release()
    facts: dict[str, Any] = {"os_name": release.get("NAME", ""), "os_version": release.get("VERSION_ID", ""),
                             "disk_encryption": disk_encrypted()}
    if edr_processes:
        facts["edr_running"] = process_running(edr_processes)
    if facts_file is not None:
        extra = json.loads(facts_file.read_text())
        if not isinstance(extra, dict):
            raise ValueError("the facts file must hold a JSON object")
        facts.update(extra)
    canonical_facts(facts)  # bounded before it is sent
    return facts


def read_event_log(path: Path | None) -> bytes | None:
    """The firmware's boot event log when the OS exposes it (None otherwise)."""
    path = path or EVENT_LOG_PATH
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if 0 < len(data) <= MAX_EVENT_LOG else None
