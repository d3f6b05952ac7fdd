"""Posture policy (YAML, reloaded when the file changes) and the verdict for one verified evidence.

Shape::

    pcr_selection: "sha256:0,1,2,3,4,5,6,7"   # what devices must quote (TPM2_Quote selection syntax)
    max_evidence_age_seconds: 3600            # evidence expiry = verification time + this
    default_class: laptop
    devices:                                  # first match wins (fnmatch on the permanent identifier)
      - {match: "a1b2*", class: kiosk}
    classes:
      laptop:
        pcrs:                                 # allowed values; PCRs not listed are not compared
          sha256:
            7: ["<64 hex>", "<64 hex>"]       # e.g. the fleet's Secure Boot states (PK/KEK/db/dbx)
        event_log: {required: false, secure_boot: true}
        facts:
          os_name: ["Debian", "Ubuntu"]
          min_os_version: "12.4"
          disk_encryption: true
          edr_running: true
        on_failure: {pcrs: quarantine, event_log: quarantine, facts: quarantine}
        max_evidence_age_seconds: 900         # overrides the top-level value

Outcome: ``compliant`` when every check passes, otherwise the worst ``on_failure`` level of the
failed checks (``refused`` > ``quarantine``); every failed check leaves a reason.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from enrollment.posture.eventlog import Event, secure_boot_state
from enrollment.posture.evidence import BANKS

log = logging.getLogger("ikepki.posture")
MAX_POLICY = 256 * 1024
_SELECTION_RE = re.compile(r"^(sha1|sha256|sha384|sha512):(\d{1,2}(?:,\d{1,2})*)$")


class Verdict(StrEnum):
    COMPLIANT = "compliant"
    QUARANTINE = "quarantine"
    REFUSED = "refused"

    @property
    def rank(self) -> int:
        return {"compliant": 0, "quarantine": 1, "refused": 2}[self.value]


class PolicyError(ValueError):
    """The posture policy file is invalid."""


@dataclass(frozen=True)
class DeviceClass:
    name: str
    pcrs: dict[str, dict[int, frozenset[bytes]]] = field(default_factory=dict)
    event_log_required: bool = False
    secure_boot: bool | None = None
    os_names: tuple[str, ...] = ()
    min_os_version: str | None = None
    disk_encryption: bool | None = None
    edr_running: bool | None = None
    on_failure: dict[str, Verdict] = field(default_factory=dict)
    max_age: timedelta | None = None

    def level(self, check: str) -> Verdict:
        return self.on_failure.get(check, Verdict.QUARANTINE)


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reasons: tuple[str, ...]
    device_class: str
    expires: datetime


def parse_selection(text: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``sha256:0,1,…`` (``+`` separates banks) → ((bank, indices), …)."""
    out = []
    for part in str(text).split("+"):
        m = _SELECTION_RE.match(part.strip())
        if not m or any(int(i) > 23 for i in m[2].split(",")):
            raise PolicyError(f"bad pcr_selection {text!r}")
        out.append((m[1], tuple(sorted({int(i) for i in m[2].split(",")}))))
    return tuple(out)


def version_tuple(text: str) -> tuple[int, ...]:
    """``12.4.1-rc`` → (12, 4, 1): numeric components up to the first non-numeric one."""
    parts: list[int] = []
    for piece in str(text)[:64].split("."):
        m = re.match(r"\d{1,9}", piece)
        if not m:
            break
        parts.append(int(m[0]))
        if m.end() != len(piece):
            break
    return tuple(parts)


def _verdict(value: Any, where: str) -> Verdict:
    try:
        level = Verdict(str(value))
    except ValueError:
        raise PolicyError(f"{where}: {value!r} is not quarantine or refused") from None
    if level is Verdict.COMPLIANT:
        raise PolicyError(f"{where}: a failed check cannot be compliant")
    return level


def _age(value: Any, where: str) -> timedelta:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 30 * 86400:
        raise PolicyError(f"{where} must be seconds between 1 and 2592000")
    return timedelta(seconds=value)


def _class(name: str, doc: Any) -> DeviceClass:
    if not isinstance(doc, dict):
        raise PolicyError(f"class {name} must be a mapping")
    pcrs: dict[str, dict[int, frozenset[bytes]]] = {}
    for key in ("pcrs", "event_log", "facts", "on_failure"):
        if not isinstance(doc.get(key) or {}, dict):
            raise PolicyError(f"class {name}: {key} must be a mapping")
    for bank, values in (doc.get("pcrs") or {}).items():
        if bank not in BANKS or not isinstance(values, dict):
            raise PolicyError(f"class {name}: unknown PCR bank {bank!r}")
        pcrs[bank] = {}
        for index, allowed in values.items():
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 23 or \
                    not isinstance(allowed, list):
                raise PolicyError(f"class {name}: PCR {index!r} needs a list of allowed values")
            try:
                digests = frozenset(bytes.fromhex(str(v)) for v in allowed)
            except ValueError:
                raise PolicyError(f"class {name}: PCR {index} values must be hex") from None
            if any(len(d) != BANKS[bank] for d in digests):
                raise PolicyError(f"class {name}: {bank} PCR {index} values must be {BANKS[bank]} bytes")
            pcrs[bank][index] = digests
    log_doc, facts = doc.get("event_log") or {}, doc.get("facts") or {}
    if not isinstance(log_doc, dict) or not isinstance(facts, dict):
        raise PolicyError(f"class {name}: event_log and facts must be mappings")
    unknown = set(facts) - {"os_name", "min_os_version", "disk_encryption", "edr_running"}
    if unknown:
        raise PolicyError(f"class {name}: unknown facts {sorted(unknown)}")
    names = facts.get("os_name")
    on_failure = {k: _verdict(v, f"class {name} on_failure.{k}") for k, v in (doc.get("on_failure") or {}).items()
                  if k in ("pcrs", "event_log", "facts")}
    age = doc.get("max_evidence_age_seconds")
    return DeviceClass(
        name, pcrs, bool(log_doc.get("required", False)),
        None if log_doc.get("secure_boot") is None else bool(log_doc["secure_boot"]),
        tuple(str(n) for n in (names if isinstance(names, list) else [names] if names else [])),
        None if facts.get("min_os_version") is None else str(facts["min_os_version"]),
        None if facts.get("disk_encryption") is None else bool(facts["disk_encryption"]),
        None if facts.get("edr_running") is None else bool(facts["edr_running"]),
        on_failure, None if age is None else _age(age, f"class {name} max_evidence_age_seconds"))


@dataclass(frozen=True)
class PosturePolicy:
    selection: tuple[tuple[str, tuple[int, ...]], ...]
    max_age: timedelta
    classes: dict[str, DeviceClass]
    default_class: str
    devices: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_yaml(cls, text: str) -> PosturePolicy:
        if len(text) > MAX_POLICY:
            raise PolicyError("policy file too large")
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"posture policy is not YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("classes"), dict) or not doc["classes"]:
            raise PolicyError("the posture policy needs a non-empty 'classes' mapping")
        classes = {str(k): _class(str(k), v) for k, v in doc["classes"].items()}
        default = str(doc.get("default_class", next(iter(classes))))
        devices = []
        if not isinstance(doc.get("devices") or [], list):
            raise PolicyError("devices must be a list")
        for i, entry in enumerate(doc.get("devices") or []):
            if not isinstance(entry, dict) or str(entry.get("class")) not in classes or not entry.get("match"):
                raise PolicyError(f"devices[{i}] needs match and a known class")
            devices.append((str(entry["match"]), str(entry["class"])))
        if default not in classes:
            raise PolicyError(f"default_class {default!r} is not a class")
        return cls(parse_selection(doc.get("pcr_selection", "sha256:0,1,2,3,4,5,6,7")),
                   _age(doc.get("max_evidence_age_seconds", 3600), "max_evidence_age_seconds"),
                   classes, default, tuple(devices))

    def class_for(self, device_id: str) -> DeviceClass:
        name = next((c for pattern, c in self.devices if fnmatch.fnmatchcase(device_id, pattern)),
                    self.default_class)
        return self.classes[name]

    def evaluate(self, device_id: str, pcrs: dict[str, dict[int, bytes]], facts: dict[str, Any],
                 events: list[Event] | None, now: datetime) -> Assessment:
        """The verdict for verified evidence (quoted PCRs, replayed log, bound facts)."""
        dc = self.class_for(device_id)
        failed: list[tuple[str, str]] = []
        for bank, allowed in dc.pcrs.items():
            for index, values in sorted(allowed.items()):
                value = pcrs.get(bank, {}).get(index)
                if value is None:
                    failed.append(("pcrs", f"{bank} PCR {index} was not quoted"))
                elif value not in values:
                    failed.append(("pcrs", f"{bank} PCR {index} = {value.hex()[:16]}… is not a reference value"))
        if events is None:
            if dc.event_log_required or dc.secure_boot is not None:
                failed.append(("event_log", "no boot event log was sent"))
        elif dc.secure_boot is not None:
            state = secure_boot_state(events)
            if state is not dc.secure_boot:
                failed.append(("event_log", f"measured Secure Boot state is {state}, policy wants {dc.secure_boot}"))
        if dc.os_names and facts.get("os_name") not in dc.os_names:
            failed.append(("facts", f"os_name {str(facts.get('os_name'))[:64]!r} not allowed"))
        if dc.min_os_version is not None:
            have = version_tuple(str(facts.get("os_version", "")))
            if not have or have < version_tuple(dc.min_os_version):
                failed.append(("facts", f"os_version {str(facts.get('os_version'))[:32]!r} < {dc.min_os_version}"))
        for fact, wanted in (("disk_encryption", dc.disk_encryption), ("edr_running", dc.edr_running)):
            if wanted is not None and facts.get(fact) is not wanted:
                failed.append(("facts", f"{fact} is {facts.get(fact)!r}, policy wants {wanted}"))
        verdict = max((dc.level(check) for check, _ in failed), key=lambda v: v.rank, default=Verdict.COMPLIANT)
        return Assessment(verdict, tuple(reason for _, reason in failed), dc.name, now + (dc.max_age or self.max_age))


class PolicyFile:
    """The policy at ``path``, reloaded when its mtime or size changes; a broken new version is
    logged and the last good one kept (a typo must not turn every device away)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._policy: PosturePolicy | None = None
        self.current()
        if self._policy is None:
            raise PolicyError(f"cannot load the posture policy {path}")

    def current(self) -> PosturePolicy:
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._stamp:
                    self._policy = PosturePolicy.from_yaml(self.path.read_text())
                    self._stamp = stamp
            except (OSError, PolicyError) as exc:
                log.error("posture policy %s not (re)loaded: %s", self.path, exc)
                self._stamp = None if self._policy is None else self._stamp
            if self._policy is None:
                raise PolicyError(f"no valid posture policy at {self.path}")
            return self._policy
