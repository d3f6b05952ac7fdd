"""Posture policy rules: reference PCR values, event-log Secure Boot, required facts, severities,
evidence age, device classes, and reloading (a broken file keeps the last good policy)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from posture_helpers import boot

from enrollment.posture.eventlog import parse_event_log
from enrollment.posture.policy import PolicyError, PolicyFile, PosturePolicy, Verdict

NOW = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
GOOD = boot()
GOOD_PCRS = {"sha256": {i: GOOD.pcr(i) for i in range(8)}}
FACTS = {"os_name": "Debian", "os_version": "12.8", "disk_encryption": True, "edr_running": True}


def policy_text(refuse_facts: bool = False) -> str:
    return f"""
pcr_selection: "sha256:0,1,2,3,4,5,6,7"
max_evidence_age_seconds: 3600
default_class: laptop
devices:
  - {{match: "kiosk-*", class: kiosk}}
classes:
  laptop:
    pcrs:
      sha256:
        7: ["{GOOD.pcr(7).hex()}"]
        0: ["{GOOD.pcr(0).hex()}"]
    event_log: {{secure_boot: true}}
    facts: {{os_name: [Debian], min_os_version: "12.4", disk_encryption: true, edr_running: true}}
    on_failure: {{pcrs: quarantine, facts: {"refused" if refuse_facts else "quarantine"}}}
  kiosk:
    max_evidence_age_seconds: 600
"""


def test_compliant_quarantine_refused() -> None:
    policy = PosturePolicy.from_yaml(policy_text(refuse_facts=True))
    events = parse_event_log(GOOD.log)
    ok = policy.evaluate("laptop-1", GOOD_PCRS, FACTS, events, NOW)
    assert (ok.verdict, ok.reasons, ok.device_class, ok.expires) == (Verdict.COMPLIANT, (), "laptop",
                                                                      NOW + timedelta(hours=1))
    tampered = {"sha256": {**GOOD_PCRS["sha256"], 7: boot(secure_boot=False).pcr(7)}}
    bad = policy.evaluate("laptop-1", tampered, FACTS, parse_event_log(boot(secure_boot=False).log), NOW)
    assert bad.verdict is Verdict.QUARANTINE
    assert any("PCR 7" in r for r in bad.reasons) and any("Secure Boot" in r for r in bad.reasons)
    old = policy.evaluate("laptop-1", GOOD_PCRS, {**FACTS, "os_version": "11.9"}, events, NOW)
    assert old.verdict is Verdict.REFUSED and "os_version" in old.reasons[0]
    for fact in ("disk_encryption", "edr_running"):
        assert policy.evaluate("laptop-1", GOOD_PCRS, {**FACTS, fact: False}, events, NOW).verdict is Verdict.REFUSED
    no_log = policy.evaluate("laptop-1", GOOD_PCRS, FACTS, None, NOW)
    assert no_log.verdict is Verdict.QUARANTINE and no_log.reasons == ("no boot event log was sent",)
    kiosk = policy.evaluate("kiosk-7", {}, {}, None, NOW)
    assert (kiosk.verdict, kiosk.device_class) == (Verdict.COMPLIANT, "kiosk")
    assert kiosk.expires == NOW + timedelta(minutes=10)


@pytest.mark.parametrize("text", [
    "classes: {}",
    "classes: {a: {pcrs: {sha256: {7: [zz]}}}}",
    "classes: {a: {pcrs: {sha256: {7: ['00']}}}}",
    "classes: {a: {on_failure: {pcrs: compliant}}}",
    "classes: {a: {facts: {firewall: true}}}",
    "pcr_selection: 'sha256:0,99'\nclasses: {a: {}}",
    "default_class: b\nclasses: {a: {}}",
    "max_evidence_age_seconds: 0\nclasses: {a: {}}",
])
def test_invalid_policies_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        PosturePolicy.from_yaml(text)


def test_policy_file_reloads_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "posture.yaml"
    path.write_text(policy_text())
    holder = PolicyFile(path)
    assert holder.current().evaluate("x", GOOD_PCRS, {**FACTS, "edr_running": False},
                                     parse_event_log(GOOD.log), NOW).verdict is Verdict.QUARANTINE
    path.write_text(policy_text(refuse_facts=True))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert holder.current().evaluate("x", GOOD_PCRS, {**FACTS, "edr_running": False},
                                     parse_event_log(GOOD.log), NOW).verdict is Verdict.REFUSED
    path.write_text("classes: [broken")
    assert holder.current().classes["laptop"].level("facts") is Verdict.REFUSED  # last good policy kept
