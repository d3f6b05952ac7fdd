"""Rules, the blast-radius guard and incidents on a real (migrated) SQLite database; the CA core
is a recording fake here (the interop tests drive the real one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ca.clock import FixedClock
from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertStatus, Requester, RevocationReason
from ca.store import migrate
from ca.store.db import Database
from response.alerts import Alert, AlertStatus
from response.config import HooksFile
from response.engine import ResponseEngine
from response.store import ResponseStore

T0 = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)


def cert(serial: int, device: str | None, status: CertStatus = CertStatus.valid) -> CertificateInfo:
    return CertificateInfo(serial, "ec", f"CN=c{serial}", (f"email:u{serial}@x.test",), "machine", T0, T0,
                           status, b"", device_id=device)


class FakeCore:
    def __init__(self, certs: list[CertificateInfo]) -> None:
        self.certs = {c.serial: c for c in certs}
        self.calls: list[tuple[Any, ...]] = []

    def select(self, kind: str, value: str, limit: int) -> list[CertificateInfo]:
        assert kind == "device"
        if value == "everything":
            raise PKIError(ErrorKind.BAD_REQUEST, f"{limit + 1} certificates selected; at most {limit}")
        return [c for c in self.certs.values() if c.device_id == value and c.status is not CertStatus.revoked]

    def revoke(self, serials: Sequence[int], reason: RevocationReason, requester: Requester) -> list[CertificateInfo]:
        self.calls.append(("revoke", tuple(serials), reason, requester.principal))
        done = []
        for s in serials:
            c = self.certs[s]
            if c.status is CertStatus.revoked or (reason is RevocationReason.certificateHold and
                                                  c.status is CertStatus.hold):
                continue
            self.certs[s] = c = replace(c, status=CertStatus.hold if reason is RevocationReason.certificateHold
                                        else CertStatus.revoked)
            done.append(c)
        return done

    def release_hold(self, serial: int, requester: Requester) -> CertificateInfo:
        self.calls.append(("release", serial))
        if self.certs[serial].status is not CertStatus.hold:
            raise PKIError(ErrorKind.CONFLICT, "not on hold")
        self.certs[serial] = replace(self.certs[serial], status=CertStatus.valid)
        return self.certs[serial]

    def block_device(self, device_id: str, requester: Requester, reason: str) -> None:
        self.calls.append(("block", device_id))


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('resp') / 'db.sqlite'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def rig(db_url: str) -> Any:
    class Rig:
        clock = FixedClock(T0 + timedelta(days=len(audits)))  # each test far from the others' windows
        core = FakeCore([cert(i, f"dev-{i // 10}") for i in range(10, 60)])  # devices dev-1..dev-5, 10 certs each
        store = ResponseStore(Database(db_url))
        audit: list[tuple[str, dict[str, Any]]] = []
    rig = Rig()
    audits.append(1)
    rig.engine = ResponseEngine(rig.core, rig.store, lambda action, actor, source="", **f: rig.audit.append(
        (action, f)), rig.clock)
    return rig


audits: list[int] = []


def hooks(**rule: Any) -> HooksFile:
    base = {"name": f"r{len(audits)}", "target": {"kind": "device", "field": "labels.device"}, "action": "hold",
            "match": {"labels.alertname": "EDR*"}}
    return HooksFile.model_validate({"sources": {"am": {"format": "alertmanager", "bearer_token": "env:X"}},
                                     "rules": [{**base, **rule}],
                                     "guard": {"max_certificates": 1000, "max_devices": 100}})


def alert(device: str, fp: str, status: AlertStatus = AlertStatus.firing, name: str = "EDRCompromise") -> Alert:
    return Alert("am", "alertmanager", fp, status, {"labels.device": device, "labels.alertname": name})


def test_hold_then_resolve_releases(rig: Any) -> None:
    h = hooks(release_on_resolve=True)
    [out] = rig.engine.handle(alert("dev-1", "fp1"), h)
    assert out.status == "executed" and out.changed == 10
    assert all(rig.core.certs[s].status is CertStatus.hold for s in range(10, 20))
    assert rig.core.certs[20].status is CertStatus.valid
    [again] = rig.engine.handle(alert("dev-1", "fp1"), h)  # Alertmanager repeats a firing alert
    assert again.status == "duplicate" and again.incident == out.incident
    [rel] = rig.engine.handle(alert("dev-1", "fp1", AlertStatus.resolved), h)
    assert rel.status == "released" and rel.changed == 10
    assert all(rig.core.certs[s].status is CertStatus.valid for s in range(10, 20))
    inc = rig.store.get(out.incident)
    assert inc.status == "released" and inc.resolved_at is not None
    actions = [a for a, _ in rig.audit]
    assert actions == ["incident-executed", "incident-released"]
    assert rig.audit[0][1]["fingerprint"] == "fp1" and rig.audit[0][1]["alert_source"] == "am"


def test_resolve_without_release_keeps_hold(rig: Any) -> None:
    h = hooks(release_on_resolve=False)
    rig.engine.handle(alert("dev-2", "fp2"), h)
    [res] = rig.engine.handle(alert("dev-2", "fp2", AlertStatus.resolved), h)
    assert res.status == "resolved"
    assert all(rig.core.certs[s].status is CertStatus.hold for s in range(20, 30))
    assert not [c for c in rig.core.calls if c[0] == "release"]


def test_unmatched_and_no_target(rig: Any) -> None:
    h = hooks()
    assert rig.engine.handle(alert("dev-1", "fp3", name="DiskFull"), h) == []
    [out] = rig.engine.handle(alert("nobody", "fp4"), h)
    assert out.status == "no-targets" and rig.core.calls == []


def test_a_selection_the_core_refuses_is_a_failed_incident(rig: Any) -> None:
    [out] = rig.engine.handle(alert("everything", "fp-all"), hooks())
    assert out.status == "failed" and rig.core.calls == []
    inc = rig.store.get(out.incident)
    assert "at most" in inc.error and rig.audit[-1][0] == "incident-failed"


def test_dry_run_changes_nothing(rig: Any) -> None:
    [out] = rig.engine.handle(alert("dev-3", "fp5"), hooks(dry_run=True))
    assert out.status == "dry-run" and rig.core.calls == []
    inc = rig.store.get(out.incident)
    assert len(inc.serials) == 10 and inc.cert_count == 0


def test_rule_limit_parks_storm_until_a_person_decides(rig: Any) -> None:
    h = hooks(action="revoke", reason="keyCompromise", block_device=True,
              limit={"max_certificates": 15, "max_devices": 5, "window_seconds": 600})
    first = rig.engine.handle(alert("dev-1", "s1"), h)[0]
    second = rig.engine.handle(alert("dev-2", "s2"), h)[0]
    third = rig.engine.handle(alert("dev-3", "s3"), h)[0]
    assert first.status == "executed" and second.status == "pending" and third.status == "pending"
    assert [c[0] for c in rig.core.calls] == ["revoke", "block"]
    inc = rig.store.get(second.incident)
    assert inc.guard and inc.guard.startswith(f"rule {h.rules[0].name}") and len(inc.serials) == 10
    assert all(rig.core.certs[s].status is CertStatus.valid for s in range(20, 40))
    done = rig.engine.decide(second.incident, True, "alice", "cli")
    assert done.status == "approved" and len(done.changed) == 10 and done.decided_by == "alice"
    assert all(rig.core.certs[s].status is CertStatus.revoked for s in range(20, 30))
    rejected = rig.engine.decide(third.incident, False, "bob", "cli", note="false positive")
    assert rejected.status == "rejected" and rejected.changed == ()
    assert all(rig.core.certs[s].status is CertStatus.valid for s in range(30, 40))
    with pytest.raises(PKIError) as err:
        rig.engine.decide(third.incident, True, "alice", "cli")
    assert err.value.kind is ErrorKind.CONFLICT
    with pytest.raises(PKIError) as err:
        rig.engine.decide(999_999, True, "alice", "cli")
    assert err.value.kind is ErrorKind.NOT_FOUND
    # the window passes: budget again
    rig.clock.advance(timedelta(seconds=601))
    assert rig.engine.handle(alert("dev-4", "s4"), h)[0].status == "executed"


def test_a_pending_hold_whose_alert_resolved_is_not_executable(rig: Any) -> None:
    """The alert resolves while its hold waits for approval: the incident becomes ``resolved`` and
    an approval afterwards is refused (nothing would ever release that hold)."""
    h = hooks(release_on_resolve=True, limit={"max_certificates": 15, "max_devices": 5, "window_seconds": 600})
    assert rig.engine.handle(alert("dev-1", "pr1"), h)[0].status == "executed"
    parked = rig.engine.handle(alert("dev-2", "pr2"), h)[0]
    assert parked.status == "pending"
    [res] = rig.engine.handle(alert("dev-2", "pr2", AlertStatus.resolved), h)
    assert res.status == "resolved"
    inc = rig.store.get(parked.incident)
    assert inc.status == "resolved" and inc.resolved_at is not None
    with pytest.raises(PKIError) as err:
        rig.engine.decide(parked.incident, True, "alice", "cli")
    assert err.value.kind is ErrorKind.CONFLICT
    assert all(rig.core.certs[s].status is CertStatus.valid for s in range(20, 30))


def test_a_hold_approved_while_its_alert_resolves_is_released(rig: Any) -> None:
    """The alert resolves between the approval's claim and the end of execution: the hold that
    was placed is released, not left behind."""
    h = hooks(release_on_resolve=True, limit={"max_certificates": 15, "max_devices": 5, "window_seconds": 600})
    assert rig.engine.handle(alert("dev-3", "pa1"), h)[0].status == "executed"
    parked = rig.engine.handle(alert("dev-4", "pa2"), h)[0]
    assert parked.status == "pending"
    revoke = rig.core.revoke

    def revoke_then_resolve(serials: Sequence[int], reason: RevocationReason, requester: Requester) -> Any:
        done = revoke(serials, reason, requester)
        rig.core.revoke = revoke
        rig.engine.handle(alert("dev-4", "pa2", AlertStatus.resolved), h)  # arrives mid-execution
        return done

    rig.core.revoke = revoke_then_resolve
    final = rig.engine.decide(parked.incident, True, "alice", "cli")
    assert final.status == "released" and final.resolved_at is not None
    assert all(rig.core.certs[s].status is CertStatus.valid for s in range(40, 50))


def test_global_guard_counts_devices_across_rules(rig: Any) -> None:
    h = HooksFile.model_validate({
        "sources": {"am": {"format": "alertmanager", "bearer_token": "env:X"}},
        "rules": [{"name": f"g{len(audits)}", "target": {"kind": "device", "field": "labels.device"},
                   "action": "hold"}],
        "guard": {"max_certificates": 1000, "max_devices": 1, "window_seconds": 60}})
    assert rig.engine.handle(alert("dev-1", "g1"), h)[0].status == "executed"
    out = rig.engine.handle(alert("dev-2", "g2"), h)[0]
    assert out.status == "pending" and rig.store.get(out.incident).guard.startswith("global")


@pytest.mark.parametrize("bad,msg", [
    ({"action": "revoke"}, "reason"),
    ({"action": "hold", "reason": "certificateHold"}, "certificateHold"),
    ({"action": "revoke", "reason": "keyCompromise", "release_on_resolve": True}, "release_on_resolve"),
    ({"action": "block", "target": {"kind": "serial", "field": "x"}}, "block"),
    ({"sources": ["nope"]}, "unknown sources"),
])
def test_bad_rules_are_refused(bad: dict[str, Any], msg: str, tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises((ValidationError, ValueError)) as err:
        hooks(**bad)
    assert msg in str(err.value)


@pytest.mark.parametrize("source,msg", [
    ({"format": "alertmanager"}, "bearer_token or client_cert_subject"),
    ({"format": "standard-webhooks"}, "secret"),
    ({"format": "keylime", "client_cert_subject": "CN=x"}, "verifier_cert"),
    ({"format": "alertmanager", "bearer_token": "env:X", "allow_unsigned": True}, "keylime sources only"),
    ({"format": "smtp", "bearer_token": "env:X"}, "format"),
])
def test_unauthenticated_sources_are_refused(source: dict[str, Any], msg: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        HooksFile.model_validate({"sources": {"s": source}})
    assert msg in str(err.value)
