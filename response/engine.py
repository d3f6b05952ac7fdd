"""Rules -> actions: which certificates/devices an alert names, the blast-radius guard, and
execution through the core. Every outcome is an incident row and an audit line carrying the
alert's source and fingerprint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Protocol

from ca.clock import Clock
from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertStatus, Requester, RevocationReason
from response.alerts import Alert, AlertStatus
from response.config import HooksFile, RuleConfig
from response.core import RevocationCore
from response.store import Budget, Incident, ResponseStore

log = logging.getLogger("ikepki.response")
CHANNEL = "hooks"
MAX_TARGETS = 10_000
MAX_ALERT_FIELDS_KEPT = 64


class Auditor(Protocol):
    def __call__(self, action: str, actor: str, source: str = "", **fields: Any) -> None: ...


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    status: str  # executed | pending | dry-run | no-targets | duplicate | released | failed | ...
    incident: int | None = None
    changed: int = 0

    def wire(self) -> dict[str, Any]:
        return {"rule": self.rule, "status": self.status, "incident": self.incident, "changed": self.changed}


def device_of(info: CertificateInfo) -> str | None:
    return info.device_id or (f"ek:{info.ek_fingerprint}" if info.ek_fingerprint else None)


class ResponseEngine:
    def __init__(self, core: RevocationCore, store: ResponseStore, audit: Auditor, clock: Clock) -> None:
        self.core, self.store, self.audit, self.clock = core, store, audit, clock

    # -- alerts ---------------------------------------------------------------------------------

    def handle(self, alert: Alert, hooks: HooksFile, client: str = "") -> list[RuleOutcome]:
        if alert.status is AlertStatus.resolved:
            return self._resolved(alert, client)
        out: list[RuleOutcome] = []
        for rule in hooks.rules:
            if rule.matches(alert.source, alert.fields):
                out.append(self._fire(alert, rule, hooks, client))
        if not out:
            self.audit("hook-alert-unmatched", f"hook:{alert.source}", client, fingerprint=alert.fingerprint,
                       format=alert.format)
        return out

    def _fire(self, alert: Alert, rule: RuleConfig, hooks: HooksFile, client: str) -> RuleOutcome:
        actor = f"hook:{alert.source}"
        value = alert.fields.get(rule.target.field, "").strip()
        base = {"source": alert.source, "format": alert.format, "fingerprint": alert.fingerprint[:128],
                "rule": rule.name, "action": rule.action,
                "reason": rule.posture if rule.action == "posture" else self._reason(rule).name
                if rule.action != "block" else None, "block_device": rule.block_device or rule.action == "block",
                "release_on_resolve": rule.release_on_resolve, "target_kind": rule.target.kind,
                "target_value": value, "alert": dict(list(alert.fields.items())[:MAX_ALERT_FIELDS_KEPT])}
        if value:
            existing = self.store.open_incident(alert.source, alert.fingerprint[:128], rule.name)
            if existing is not None:  # Alertmanager re-sends firing alerts every repeat_interval
                return RuleOutcome(rule.name, "duplicate", existing.id)
        now = self.clock.now()
        try:
            certs = self.core.select(rule.target.kind, value, MAX_TARGETS) if value else []
        except PKIError as exc:  # e.g. more than MAX_TARGETS certificates: never act on that
            if exc.kind is ErrorKind.UNAVAILABLE:
                raise
            inc = self.store.record(now, {**base, "status": "failed", "error": exc.detail[:1024]})
            self._audit_incident("incident-failed", actor, client, inc, error=exc.detail)
            return RuleOutcome(rule.name, "failed", inc.id)
        affected = [c for c in certs if rule.action == "revoke" or
                    (rule.action in ("hold", "posture") and c.status is CertStatus.valid)]
        devices = self._devices(rule, value, certs)
        values = {**base, "serials": [c.serial_hex for c in affected], "devices": devices,
                  "cert_count": len(affected), "device_count": len(devices) if base["block_device"]
                  else len({d for c in affected if (d := device_of(c))})}
        if rule.dry_run:
            inc = self.store.record(now, {**values, "status": "dry-run", "cert_count": 0, "device_count": 0})
            self._audit_incident("hook-dry-run", actor, client, inc)
            return RuleOutcome(rule.name, "dry-run", inc.id)
        if not affected and not (base["block_device"] and devices):
            inc = self.store.record(now, {**values, "status": "no-targets", "cert_count": 0, "device_count": 0})
            self._audit_incident("hook-no-targets", actor, client, inc)
            return RuleOutcome(rule.name, "no-targets", inc.id)
        inc = self.store.reserve(now, values, self._budgets(rule, hooks))
        if inc.status == "pending":
            self._audit_incident("incident-pending", actor, client, inc)
            return RuleOutcome(rule.name, "pending", inc.id)
        return self._execute(inc, Requester(CHANNEL, actor, client))

    def _devices(self, rule: RuleConfig, value: str, certs: Sequence[CertificateInfo]) -> list[str]:
        if rule.action == "posture":  # the device whose posture drops (target kind device)
            return [value]
        if not (rule.block_device or rule.action == "block"):
            return []
        if rule.target.kind == "device":
            return [value]
        if rule.target.kind == "ek":
            return [f"ek:{value.lower().removeprefix('ek:')}"]
        return sorted({d for c in certs if (d := device_of(c))})

    @staticmethod
    def _reason(rule: RuleConfig) -> RevocationReason:
        return RevocationReason.certificateHold if rule.action == "hold" else RevocationReason[rule.reason or
                                                                                                "unspecified"]

    @staticmethod
    def _budgets(rule: RuleConfig, hooks: HooksFile) -> list[Budget]:
        budgets = []
        if rule.limit is not None:
            budgets.append(Budget(f"rule {rule.name}", rule.limit.max_certificates, rule.limit.max_devices,
                                  timedelta(seconds=rule.limit.window_seconds), rule.name))
        g = hooks.guard
        budgets.append(Budget("global", g.max_certificates, g.max_devices, timedelta(seconds=g.window_seconds)))
        return budgets

    def _execute(self, inc: Incident, requester: Requester) -> RuleOutcome:
        changed: list[str] = []
        try:
            if inc.action in ("hold", "revoke") and inc.serials:
                reason = RevocationReason.certificateHold if inc.action == "hold" else RevocationReason[
                    inc.reason or "unspecified"]
                done = self.core.revoke([int(s, 16) for s in inc.serials], reason, requester)
                changed = [d.serial_hex for d in done]
            if inc.action == "posture":
                for device in inc.devices:
                    changed += self.core.set_posture(device, inc.reason or "quarantine",
                                                     f"incident {inc.id} ({inc.rule})", requester)
            if inc.block_device:
                for device in inc.devices:
                    self.core.block_device(device, requester, f"incident {inc.id} ({inc.rule})")
        except PKIError as exc:
            self.store.finish(inc.id, self.clock.now(), "failed", changed, error=exc.detail)
            self._audit_incident("incident-failed", requester.principal, requester.source, inc, error=exc.detail)
            if exc.kind is ErrorKind.UNAVAILABLE:
                raise
            return RuleOutcome(inc.rule, "failed", inc.id, len(changed))
        status = "approved" if inc.decided_by else "executed"
        self.store.finish(inc.id, self.clock.now(), status, changed, cert_count=len(changed))
        self._audit_incident("incident-executed", requester.principal, requester.source, inc, changed=changed)
        now = self.store.get(inc.id)
        if now is not None and now.resolved_at is not None and inc.action == "hold" and inc.release_on_resolve:
            # the alert resolved while this ran: _resolved saw it "executing" and released nothing
            return self._release(replace(now, changed=tuple(changed)), f"hook:{inc.source}", requester.source)
        return RuleOutcome(inc.rule, status, inc.id, len(changed))

    def _resolved(self, alert: Alert, client: str) -> list[RuleOutcome]:
        actor = f"hook:{alert.source}"
        out: list[RuleOutcome] = []
        for inc in self.store.resolved(alert.source, alert.fingerprint[:128], self.clock.now()):
            if inc.action != "hold" or not inc.release_on_resolve or inc.status not in ("executed", "approved"):
                self._audit_incident("incident-resolved", actor, client, inc)
                out.append(RuleOutcome(inc.rule, "resolved", inc.id))
                continue
            out.append(self._release(inc, actor, client))
        return out

    def _release(self, inc: Incident, actor: str, client: str) -> RuleOutcome:
        """Release the holds this incident placed (its alert resolved)."""
        released = []
        for serial in inc.changed:
            try:
                self.core.release_hold(int(serial, 16), Requester(CHANNEL, actor, client))
                released.append(serial)
            except PKIError as exc:  # revoked for good meanwhile, or released by a person
                if exc.kind is ErrorKind.UNAVAILABLE:
                    raise
        self.store.finish(inc.id, self.clock.now(), "released", inc.changed)
        self._audit_incident("incident-released", actor, client, inc, released=released)
        return RuleOutcome(inc.rule, "released", inc.id, len(released))

    # -- people ---------------------------------------------------------------------------------

    def decide(self, incident_id: int, approve: bool, actor: str, channel: str, source: str = "",
               note: str | None = None) -> Incident:
        """Approve (execute the parked plan now) or reject a pending incident."""
        now = self.clock.now()
        if not self.store.claim_decision(incident_id, "approve" if approve else "reject", actor, now, note):
            inc = self.store.get(incident_id)
            if inc is None:
                raise PKIError(ErrorKind.NOT_FOUND, f"no incident {incident_id}")
            raise PKIError(ErrorKind.CONFLICT, f"incident {incident_id} is {inc.status}, not pending")
        inc = self.store.get(incident_id)
        assert inc is not None
        if approve:
            self._execute(inc, Requester(channel, actor, source))
        else:
            self._audit_incident("incident-rejected", actor, source, inc, note=note)
        final = self.store.get(incident_id)
        assert final is not None
        return final

    def _audit_incident(self, action: str, actor: str, client: str, inc: Incident, **extra: Any) -> None:
        self.audit(action, actor, client, incident=inc.id, alert_source=inc.source, fingerprint=inc.fingerprint,
                   rule=inc.rule, rule_action=inc.action, target=f"{inc.target_kind}:{inc.target_value}",
                   serials=list(inc.serials)[:100], devices=list(inc.devices)[:100], guard=inc.guard, **extra)
