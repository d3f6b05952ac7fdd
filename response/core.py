"""The narrow port through which response acts on certificates, and its adapter onto the CA core.

Selection is the core's (:func:`ca.revocation.select_targets`, the same as ``ikepki revoke`` and
``POST /admin/v1/revocations``); every change goes through the Authority (``Authority.revoke``
writes the revocation, the outbox event and one delivery row per gateway in one transaction, so the
push reaches gateways like any ``ikepki revoke``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertStatus, Requester, RevocationReason, RevocationRequest, parse_serial
from ca.ports import ServiceKeys
from ca.revocation import CHUNK, Selector, select_targets


class RevocationCore(Protocol):
    def select(self, kind: str, value: str, limit: int) -> list[CertificateInfo]:
        """Live (valid or held) certificates the target names: device, ek, serial, identity, user."""

    def revoke(self, serials: Sequence[int], reason: RevocationReason, requester: Requester) -> list[CertificateInfo]:
        """Revoke or hold (certificateHold); returns the certificates that changed."""

    def release_hold(self, serial: int, requester: Requester) -> CertificateInfo: ...

    def block_device(self, device_id: str, requester: Requester, reason: str) -> None: ...

    def set_posture(self, device_id: str, verdict: str, reason: str, requester: Requester) -> list[str]:
        """Lower the device's posture (``ca.posture``); returns the serials put on hold."""


def selector(kind: str, value: str) -> Selector | None:
    """The core's selector for a rule target; None when the value cannot name anything."""
    if kind == "device":
        return Selector(device_id=value)
    if kind == "ek":
        return Selector(device_id=f"ek:{value.lower().removeprefix('ek:')}")
    if kind == "serial":
        try:
            return Selector(serials=(parse_serial(value),))
        except PKIError:
            return None
    if kind in ("identity", "user"):  # an IdP user name is an identity until IdP accounts exist
        return Selector(identity=value)
    raise PKIError(ErrorKind.CONFIG, f"unknown target kind {kind!r}")


class AuthorityCore:
    """Adapter onto a ``ca.deployment.Deployment`` (its store and Authority)."""

    def __init__(self, deployment: ServiceKeys) -> None:
        self.dep = deployment

    def select(self, kind: str, value: str, limit: int) -> list[CertificateInfo]:
        sel = selector(kind, value)
        if sel is None:
            return []
        found = select_targets(self.dep.store, sel, limit)
        return [t for t in found.targets if t.status is not CertStatus.revoked]

    def revoke(self, serials: Sequence[int], reason: RevocationReason, requester: Requester) -> list[CertificateInfo]:
        done: list[CertificateInfo] = []
        todo = list(dict.fromkeys(serials))
        for i in range(0, len(todo), CHUNK):
            done += self.dep.authority.revoke(RevocationRequest(tuple(todo[i:i + CHUNK]), reason, requester))
        return done

    def release_hold(self, serial: int, requester: Requester) -> CertificateInfo:
        info: CertificateInfo = self.dep.authority.release_hold(serial, requester)
        return info

    def block_device(self, device_id: str, requester: Requester, reason: str) -> None:
        self.dep.authority.block_device(device_id, requester, reason)

    def set_posture(self, device_id: str, verdict: str, reason: str, requester: Requester) -> list[str]:
        from ca.posture import device_posture

        posture = device_posture(self.dep)
        if posture is None:
            raise PKIError(ErrorKind.CONFIG, "no device posture package is installed (entry point ikepki.posture)")
        return posture.record_verdict(device_id, verdict, reason, requester)
