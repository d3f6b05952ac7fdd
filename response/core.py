"""The narrow port through which response acts on certificates, and its adapter onto the CA core.

Everything goes through the Authority (``Authority.revoke`` writes the revocation, the outbox
event and one delivery row per gateway in one transaction, so the push reaches gateways like any
``ikepki revoke``); selection reads the certificate store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertificateQuery, CertStatus, Requester, RevocationReason, RevocationRequest
from ca.model import parse_serial as _parse_serial

CHUNK = 1000


class RevocationCore(Protocol):
    def select(self, kind: str, value: str, limit: int) -> list[CertificateInfo]:
        """Live (valid or held) certificates the target names: device, ek, serial, identity, user."""

    def revoke(self, serials: Sequence[int], reason: RevocationReason, requester: Requester) -> list[CertificateInfo]:
        """Revoke or hold (certificateHold); returns the certificates that changed."""

    def release_hold(self, serial: int, requester: Requester) -> CertificateInfo: ...

    def block_device(self, device_id: str, requester: Requester, reason: str) -> None: ...


def _identity_forms(identity: str) -> list[str]:
    if identity.startswith(("email:", "DNS:", "IP:")):
        kind, _, value = identity.partition(":")
        return [f"DNS:{value.lower()}" if kind == "DNS" else identity]
    if "@" in identity:
        return [f"email:{identity}"]
    return [f"DNS:{identity.lower()}", f"IP:{identity}"]


class AuthorityCore:
    """Adapter onto a ``ca.deployment.Deployment`` (its store and Authority)."""

    def __init__(self, deployment: Any) -> None:
        self.dep = deployment

    def select(self, kind: str, value: str, limit: int) -> list[CertificateInfo]:
        store = self.dep.store
        queries: list[CertificateQuery] = []
        if kind == "device":
            queries.append(CertificateQuery(device_id=value, limit=limit + 1))
            if value.startswith("ek:"):
                queries.append(CertificateQuery(ek_fingerprint=value[3:], limit=limit + 1))
        elif kind == "ek":
            queries.append(CertificateQuery(ek_fingerprint=value.lower().removeprefix("ek:"), limit=limit + 1))
        elif kind == "serial":
            try:
                queries.append(CertificateQuery(serial=_parse_serial(value), limit=1))
            except PKIError:
                return []
        elif kind in ("identity", "user"):
            queries += [CertificateQuery(san=f, limit=limit + 1) for f in _identity_forms(value)]
        else:
            raise PKIError(ErrorKind.CONFIG, f"unknown target kind {kind!r}")
        seen: dict[int, CertificateInfo] = {}
        for q in queries:
            for info in store.search(q):
                if q.san and q.san not in info.sans:
                    continue  # the store matches SANs by substring
                if info.status is not CertStatus.revoked:
                    seen.setdefault(info.serial, info)
        return list(seen.values())

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
