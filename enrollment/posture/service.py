"""Posture service: nonces, verification of evidence, verdicts, the posture mark for issuance, and
holding certificates when a device's posture drops.

Evidence (:mod:`enrollment.posture.evidence`) is accepted only from an AK certificate this CA issued
(profile ``attestation-ak``, byte-identical to the stored one, valid, not revoked); its device is the
one recorded at AK enrollment.  Verification order: AK → nonce redeemed once (issued to this AK,
unexpired) → quote (:mod:`enrollment.posture.quote`) over at least the policy's PCR selection with
qualifying data H(nonce ‖ H(facts)) → event log replay equal to the quoted PCRs → policy verdict.
Evidence that does not verify raises :class:`EvidenceError` and changes no posture (an attacker with
an old quote cannot downgrade a device); a verified verdict is recorded before it is returned.

Operator/automated verdicts (``set_verdict``) stay in force over later evidence until an operator
clears them (verdict ``compliant`` by an operator).  Any downgrade holds (certificateHold) the
device's valid machine certificates that no longer fit: on ``quarantine`` the compliant-marked ones,
on ``refused`` all of them.  A hold goes to the gateways through the revocation push outbox like
any revocation: the bundled responder deletes the device's SAs at once (and refuses the rekey).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ca.errors import ErrorKind, PKIError
from ca.model import CertificateQuery, CertStatus, PostureMark, Requester, RevocationReason, RevocationRequest
from ca.oids import POSTURE_COMPLIANT, POSTURE_QUARANTINE
from ca.ports import CoreServices
from ca.posture import PostureSummary
from enrollment.posture.errors import EvidenceError, EvidenceReason
from enrollment.posture.eventlog import parse_event_log, replay
from enrollment.posture.evidence import NONCE_SIZE, Evidence, b64e, qualifying_data
from enrollment.posture.policy import PolicyFile, PosturePolicy, Verdict
from enrollment.posture.quote import verify_quote
from enrollment.posture.settings import PostureSettings
from enrollment.posture.store import PostureRecord, SqlPostureStore

log = logging.getLogger("ikepki.posture")
AK_PROFILE = "attestation-ak"
MACHINE_PROFILE = "machine"
CHANNEL = "posture"
ORIGINS = ("evidence", "operator", "automated")
POLICY_OIDS = {Verdict.COMPLIANT: POSTURE_COMPLIANT, Verdict.QUARANTINE: POSTURE_QUARANTINE}


@dataclass(frozen=True)
class VerifiedAk:
    serial_hex: str
    device_id: str
    certificate: x509.Certificate


class PostureService:
    """Blocking (DB, HSM): call from a worker thread."""

    def __init__(self, deployment: CoreServices, settings: PostureSettings) -> None:
        self.dep = deployment
        self.settings = settings
        self.store = SqlPostureStore(deployment.db)
        self.policy_file = PolicyFile(deployment.path(settings.policy)) if settings.policy else None

    @property
    def enabled(self) -> bool:
        return self.policy_file is not None

    def policy(self) -> PosturePolicy:
        if self.policy_file is None:
            raise PKIError(ErrorKind.UNAVAILABLE, "device posture is not configured (posture.policy)")
        return self.policy_file.current()

    # -- AK ----------------------------------------------------------------------------------------
    def _ak(self, der: bytes, now: datetime) -> VerifiedAk:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise EvidenceError(EvidenceReason.UNKNOWN_AK, "akCertificate is not a DER certificate") from None
        info = self.dep.store.get(cert.serial_number)
        if info is None or info.profile != AK_PROFILE or not hmac.compare_digest(info.der, der):
            raise EvidenceError(EvidenceReason.UNKNOWN_AK, "not an AK certificate issued by this CA")
        if info.status is not CertStatus.valid or info.not_after <= now or not info.device_id:
            raise EvidenceError(EvidenceReason.UNKNOWN_AK, "the AK certificate is expired, revoked or on hold")
        return VerifiedAk(info.serial_hex, info.device_id, cert)

    # -- nonce -------------------------------------------------------------------------------------
    def nonce(self, ak_der: bytes, source: str) -> dict[str, str]:
        self.policy()
        now = self.dep.clock.now()
        ak = self._ak(ak_der, now)
        if self.dep.store.is_device_blocked(ak.device_id, None):
            raise PKIError(ErrorKind.BLOCKED, "this device is blocked")
        value = os.urandom(NONCE_SIZE)
        expires = now + timedelta(seconds=self.settings.nonce_ttl_seconds)
        self.store.add_nonce(value, ak.serial_hex, now, expires)
        return {"nonce": b64e(value), "expires": expires.isoformat(),
                "pcrSelection": "+".join(f"{b}:{','.join(map(str, i))}" for b, i in self.policy().selection)}

    # -- evidence ----------------------------------------------------------------------------------
    def submit(self, evidence: Evidence, source: str) -> dict[str, Any]:
        policy = self.policy()
        now = self.dep.clock.now()
        ak = self._ak(evidence.ak_certificate, now)
        try:
            if not self.store.redeem_nonce(evidence.nonce, ak.serial_hex, now):
                raise EvidenceError(EvidenceReason.BAD_NONCE, "unknown, expired or already used nonce for this AK")
            quoted = verify_quote(evidence.quote, evidence.signature, ak.certificate.public_key(),
                                  qualifying_data(evidence.nonce, evidence.facts), evidence.pcrs, policy.selection)
            events = None
            if evidence.event_log is not None:
                events = parse_event_log(evidence.event_log)
                for bank, values in quoted.pcrs.items():
                    replayed = replay(events, bank)
                    zero = b"\0" * len(next(iter(values.values())))
                    bad = [i for i, v in values.items() if not hmac.compare_digest(replayed.get(i, zero), v)]
                    if bad:
                        raise EvidenceError(EvidenceReason.EVENT_LOG,
                                            f"event log replay differs from the quoted {bank} PCRs {sorted(bad)}")
        except EvidenceError as exc:
            self.dep.audit.append(now, ak.device_id, "posture-evidence-rejected", CHANNEL, source=source,
                                  device=ak.device_id, reason=exc.reason.value, detail=exc.detail[:200])
            raise
        assessment = policy.evaluate(ak.device_id, quoted.pcrs, evidence.facts, events, now)
        override = self._override(ak.device_id)
        verdict, reasons = assessment.verdict, list(assessment.reasons)
        if override is not None and override.verdict.rank > verdict.rank:
            verdict = override.verdict
            reasons.append(f"{override.origin} verdict by {override.principal}: {', '.join(override.reasons)}")
        previous = self.store.latest(ak.device_id)
        record_id = self.store.add({
            "device_id": ak.device_id, "ak_serial": ak.serial_hex, "received_at": now, "verdict": verdict.value,
            "reasons": reasons, "device_class": assessment.device_class, "facts": evidence.facts,
            "pcrs": {b: {str(i): v.hex() for i, v in sorted(p.items())} for b, p in quoted.pcrs.items()},
            "quote": evidence.quote, "signature": evidence.signature,
            "event_log_sha256": None if evidence.event_log is None else hashlib.sha256(evidence.event_log).hexdigest(),
            "expires_at": assessment.expires, "origin": "evidence", "principal": ak.device_id})
        self.dep.audit.append(now, ak.device_id, "posture-evidence", CHANNEL, source=source, device=ak.device_id,
                              verdict=verdict.value, reasons=reasons, evidence=record_id)
        held = self._on_downgrade(ak.device_id, previous, verdict, Requester(CHANNEL, ak.device_id, source))
        return {"id": record_id, "device": ak.device_id, "verdict": verdict.value, "reasons": reasons,
                "deviceClass": assessment.device_class, "expires": assessment.expires.isoformat(),
                "heldSerials": held}

    def _override(self, device_id: str) -> PostureRecord | None:
        """The newest operator/automated verdict unless an operator cleared it since."""
        for record in self.store.history(device_id, 200):
            if record.origin != "evidence":
                return None if record.verdict is Verdict.COMPLIANT else record
        return None

    # -- operator / automated verdicts -------------------------------------------------------------
    def set_verdict(self, device_id: str, verdict: Verdict, reason: str, requester: Requester,
                    origin: str = "operator") -> dict[str, Any]:
        """Record a verdict from a person or an automated input; ``compliant`` clears an earlier one."""
        if origin not in ORIGINS[1:] or not device_id or len(device_id) > 255:
            raise PKIError(ErrorKind.BAD_REQUEST, "bad device or origin")
        now = self.dep.clock.now()
        previous = self.store.latest(device_id)
        if previous is None and not self.dep.store.search(CertificateQuery(device_id=device_id, limit=1)):
            raise PKIError(ErrorKind.NOT_FOUND, f"no device {device_id}")
        expires = previous.expires_at if previous is not None else now
        record_id = self.store.add({
            "device_id": device_id, "received_at": now, "verdict": verdict.value, "reasons": [reason[:500]],
            "device_class": previous.device_class if previous else "", "expires_at": expires, "origin": origin,
            "principal": requester.principal[:128]})
        self.dep.audit.append(now, requester.principal, "posture-set", requester.channel, source=requester.source,
                              device=device_id, verdict=verdict.value, reason=reason[:500], origin=origin)
        held = self._on_downgrade(device_id, previous, verdict, requester)
        return {"id": record_id, "device": device_id, "verdict": verdict.value, "heldSerials": held}

    def record_verdict(self, device_id: str, verdict: str, reason: str, requester: Requester,
                       origin: str = "automated") -> list[str]:
        """:class:`ca.posture.DevicePosture`: a verdict from outside (e.g. an EDR alert rule)."""
        return list(self.set_verdict(device_id, Verdict(verdict), reason, requester, origin)["heldSerials"])

    def _on_downgrade(self, device_id: str, previous: PostureRecord | None, verdict: Verdict,
                      requester: Requester) -> list[str]:
        """Hold the device's machine certificates the new verdict no longer allows (module docstring)."""
        if verdict is Verdict.COMPLIANT:
            return []
        certs = self.dep.store.search(CertificateQuery(device_id=device_id, profile=MACHINE_PROFILE,
                                                       status=CertStatus.valid, limit=1000))
        serials = tuple(info.serial for info in certs
                        if verdict is Verdict.REFUSED or POSTURE_COMPLIANT in _policies(info.certificate()))
        if not serials:
            return []
        done = self.dep.authority.revoke(RevocationRequest(serials, RevocationReason.certificateHold, requester))
        log.info("posture: device %s is %s, held %d certificate(s)", device_id, verdict.value, len(done))
        return [info.serial_hex for info in done]

    # -- issuance ----------------------------------------------------------------------------------
    def issuance_mark(self, device_id: str) -> tuple[PostureMark, int] | None:
        """The posture mark for a device certificate now, or None when posture is off.

        Needs evidence verified within ``issue_window_seconds`` and unexpired; a refused device gets a
        PKIError(UNAUTHORIZED) naming the reasons."""
        if not self.enabled:
            return None
        now = self.dep.clock.now()
        evidence = next((r for r in self.store.history(device_id, 200) if r.origin == "evidence"), None)
        if evidence is None or evidence.expires_at <= now or \
                now - evidence.received_at > timedelta(seconds=self.settings.issue_window_seconds):
            raise PKIError(ErrorKind.UNAUTHORIZED, "no fresh device posture evidence: the device agent must send "
                                                   "a TPM quote first (ikepki device enroll/renew)")
        verdict, reasons = evidence.verdict, evidence.reasons
        override = self._override(device_id)  # an operator verdict given after the evidence still counts
        if override is not None and override.verdict.rank > verdict.rank:
            verdict, reasons = override.verdict, override.reasons
        if verdict is Verdict.REFUSED:
            raise PKIError(ErrorKind.UNAUTHORIZED, "device posture refused: " + "; ".join(reasons)[:400])
        return PostureMark(POLICY_OIDS[verdict], evidence.expires_at), evidence.id

    def record_issued(self, evidence_id: int, serial_hex: str) -> None:
        self.store.set_issued(evidence_id, serial_hex)

    def latest(self, device_id: str) -> PostureSummary | None:
        """:class:`ca.posture.DevicePosture`: the newest verdict record of the device."""
        r = self.store.latest(device_id)
        if r is None:
            return None
        return PostureSummary(r.device_id, r.verdict.value, r.received_at, r.reasons, r.origin, r.principal,
                              r.device_class, r.expires_at)

    def show(self, device_id: str, limit: int = 10) -> dict[str, Any]:
        history = self.store.history(device_id, limit)
        if not history:
            raise PKIError(ErrorKind.NOT_FOUND, f"no posture recorded for device {device_id}")
        return {"device": device_id, "verdict": history[0].verdict.value, "latest": history[0].wire(),
                "history": [r.wire() for r in history[1:]]}


def _policies(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return {p.policy_identifier for p in cert.extensions.get_extension_for_class(x509.CertificatePolicies).value}
    except x509.ExtensionNotFound:
        return set()

