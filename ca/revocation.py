"""Revocation in bulk: which certificates a selector names, and revoking them (RFC 5280 §5.3.1
reasons) through the Authority. The one implementation behind ``ikepki revoke`` (:mod:`ca.cli.revoke`)
and ``POST /admin/v1/revocations`` (:mod:`enrollment.admin`), so both select exactly the same
certificates and apply the same guards.

Targets are the union of the selectors: serials (also from a bulk file), a device (``ek:<fp>``:
by TPM EK fingerprint), an identity, an identity-provider user, or a profile narrowed by a literal subject
substring, a SAN substring or an expiry window. A profile filter that still hits every certificate of the profile
is refused unless ``all_of_profile`` says so: the guard counts what the selector hits.

Which gateways hold a live IKE SA of a target (shown in a dry run) is asked through the
:class:`LiveSessionProbe` port; the push package implements it (entry point group
``ikepki.live_sessions``), so the core imports no gateway protocol.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from ca.errors import ErrorKind, PKIError
from ca.model import (
    CertificateInfo,
    CertificateQuery,
    CertStatus,
    Requester,
    RevocationReason,
    RevocationRequest,
    parse_serial,
)

log = logging.getLogger("ikepki.revocation")

CHUNK = 1000  # serials per Authority.revoke transaction
MAX_FILE_BYTES = 64 * 1024 * 1024
SAN_PREFIXES = ("email:", "DNS:", "IP:")
LIVE_SA_LIMIT = 1000  # look up live SAs only for selections up to this size
LIVE_SESSIONS_GROUP = "ikepki.live_sessions"


# -- selection ---------------------------------------------------------------------------------

def parse_reason(name: str | None, hold: bool) -> RevocationReason:
    """The RFC 5280 §5.3.1 reason by name; ``hold`` means certificateHold."""
    if hold:
        return RevocationReason.certificateHold
    if not name:
        raise PKIError(ErrorKind.BAD_REQUEST, "a revocation reason is required (e.g. keyCompromise)")
    try:
        reason = RevocationReason.parse(name)
    except ValueError as exc:
        raise PKIError(ErrorKind.BAD_REQUEST, str(exc)) from None
    if reason is RevocationReason.removeFromCRL:
        raise PKIError(ErrorKind.BAD_REQUEST, "removeFromCRL is not a revocation reason; use unhold")
    if reason is RevocationReason.certificateHold:
        raise PKIError(ErrorKind.BAD_REQUEST, "use --hold to suspend a certificate")
    return reason


def identity_forms(identity: str) -> list[str]:
    """``alice@x`` -> ``email:alice@x``; ``h1.x`` -> ``DNS:h1.x`` / ``IP:h1.x``; prefixed: as is."""
    if identity.startswith(SAN_PREFIXES):
        kind, _, value = identity.partition(":")
        return [f"DNS:{value.lower()}" if kind == "DNS" else identity]
    if "@" in identity:
        return [f"email:{identity}"]
    return [f"DNS:{identity.lower()}", f"IP:{identity}"]


@dataclass(frozen=True)
class Selector:
    """Targets are the union of the selectors; a profile needs a narrowing filter or ``all_of_profile``."""

    serials: tuple[int, ...] = ()
    device_id: str | None = None
    identity: str | None = None
    profile: str | None = None
    subject_contains: str | None = None  # literal, case-insensitive substring of the RFC 4514 subject
    san_contains: str | None = None  # case-insensitive substring of a SAN
    expires_before: datetime | None = None
    expires_after: datetime | None = None
    all_of_profile: bool = False
    user: str | None = None  # identity-provider user: ``<iss>#<sub>``, ``sub`` or email (the store's mapping)

    @property
    def narrowed(self) -> bool:
        return any((self.subject_contains, self.san_contains, self.expires_before, self.expires_after))


@dataclass
class Selection:
    targets: list[CertificateInfo] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)


class TargetReader(Protocol):
    """What selection needs from the store (:class:`ca.store.sql.SqlCertificateReader`)."""

    def get_many(self, serials: Sequence[int]) -> dict[int, CertificateInfo]: ...

    def search(self, q: CertificateQuery) -> list[CertificateInfo]: ...

    def count_matching(self, q: CertificateQuery) -> int: ...


def _profile_hits(store: TargetReader, sel: Selector, limit: int) -> list[CertificateInfo]:
    """The certificates of ``sel.profile`` the filters hit, refusing a filter that hits all of them
    (without ``all_of_profile``) and more than ``limit``."""
    assert sel.profile is not None
    if not sel.narrowed and not sel.all_of_profile:
        raise PKIError(ErrorKind.BAD_REQUEST, "a profile selector needs a filter (subject, SAN, expiry) "
                                              "or all_of_profile (--all-of-profile)")
    # SANs are matched here (case-insensitively, per SAN), so then the query cannot be capped at
    # ``limit`` but must not be cut short by the store's own cap either
    q = CertificateQuery(profile=sel.profile, subject_contains=sel.subject_contains,
                         expires_before=sel.expires_before, expires_after=sel.expires_after,
                         limit=100_000 if sel.san_contains else limit + 1)
    if sel.san_contains and store.count_matching(q) > q.limit:
        raise PKIError(ErrorKind.BAD_REQUEST, f"more than {q.limit} certificates to match SANs against: "
                                              "narrow the selector by subject or expiry too")
    hits = [info for info in store.search(q)
            if not sel.san_contains or any(sel.san_contains.lower() in s.lower() for s in info.sans)]
    if len(hits) > limit:
        raise PKIError(ErrorKind.BAD_REQUEST, f"the profile selector hits more than {limit} certificates")
    if sel.narrowed and not sel.all_of_profile and len(hits) > 1 and \
            len(hits) == store.count_matching(CertificateQuery(profile=sel.profile)):
        raise PKIError(ErrorKind.BAD_REQUEST, f"the filter selects every certificate of profile {sel.profile!r} "
                                              f"({len(hits)}): say all_of_profile (--all-of-profile) if you mean it")
    return hits


def select_targets(store: TargetReader, sel: Selector, max_targets: int = 100_000) -> Selection:
    """The union of the selectors, each certificate once, serials first in the given order."""
    out = Selection()
    seen: dict[int, CertificateInfo] = {}
    found = store.get_many(sel.serials)
    for serial in sel.serials:
        info = found.get(serial)
        if info is None:
            out.not_found.append(serial)
        else:
            seen.setdefault(serial, info)
    if sel.profile is None and sel.narrowed:
        raise PKIError(ErrorKind.BAD_REQUEST, "subject/SAN/expiry filters narrow a --profile selector")
    if not (sel.serials or sel.device_id or sel.identity or sel.profile or sel.user):
        raise PKIError(ErrorKind.BAD_REQUEST, "no targets: give serials, --device, --identity, --user, --profile "
                                              "or --from-file")
    hits: list[CertificateInfo] = []
    if sel.device_id:
        hits += store.search(CertificateQuery(device_id=sel.device_id, limit=max_targets + 1))
        if sel.device_id.startswith("ek:"):
            hits += store.search(CertificateQuery(ek_fingerprint=sel.device_id[3:], limit=max_targets + 1))
    if sel.identity:
        for form in identity_forms(sel.identity):
            # the store matches SANs by substring: keep exact matches only
            hits += [i for i in store.search(CertificateQuery(san=form, limit=max_targets + 1)) if form in i.sans]
    if sel.user:
        hits += store.search(CertificateQuery(user=sel.user, limit=max_targets + 1))
    if sel.profile:
        hits += _profile_hits(store, sel, max_targets)
    for info in hits:
        seen.setdefault(info.serial, info)
    if len(seen) > max_targets:
        raise PKIError(ErrorKind.BAD_REQUEST, f"{len(seen)} certificates selected; at most {max_targets}")
    out.targets = list(seen.values())
    return out


def read_serials_file(path: Path) -> list[int]:
    """Serials of a bulk incident: CSV (a ``serial`` column, else the first column; ``#``
    comments) or JSON lines (a string or an object with ``serial``). At most 64 MiB."""
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)  # never more: a huge (or endless) file is refused, not loaded
    if len(raw) > MAX_FILE_BYTES:
        raise PKIError(ErrorKind.BAD_REQUEST, f"{path}: larger than {MAX_FILE_BYTES} bytes")
    text = raw.decode("utf-8-sig", "replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    if lines[0].lstrip()[:1] in ("{", '"'):
        return [_json_line(ln, n) for n, ln in enumerate(lines, 1)]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    col = 0
    header = [c.strip().lower() for c in rows[0]]
    if "serial" in header:
        col = header.index("serial")
        rows = rows[1:]
    return [parse_serial(r[col]) for r in rows if len(r) > col and r[col].strip()]


def _json_line(line: str, n: int) -> int:
    try:
        obj = json.loads(line)
    except ValueError:
        raise PKIError(ErrorKind.BAD_REQUEST, f"line {n}: not JSON") from None
    value = obj.get("serial") if isinstance(obj, dict) else obj
    if not isinstance(value, str | int):
        raise PKIError(ErrorKind.BAD_REQUEST, f"line {n}: no serial")
    return parse_serial(format(value, "x") if isinstance(value, int) else value)


# -- live SAs on gateways (port; the push package implements it) -------------------------------

@dataclass(frozen=True)
class GatewaySessions:
    peers: frozenset[str]  # normalised peer identities
    serials: frozenset[int]  # peer certificate serials, when the gateway reports them


class LiveSessionProbe(Protocol):
    """Asks gateways which IKE SAs are up (best effort: a gateway that cannot tell is left out)."""

    def sessions(self, gateways: Iterable[Mapping[str, Any]], timeout: float = 1.0) -> dict[str, GatewaySessions]:
        """Live sessions per enabled gateway that can tell."""
        ...

    def holders(self, targets: Sequence[CertificateInfo], sessions: Mapping[str, GatewaySessions]
                ) -> dict[str, list[str]]:
        """serial hex -> names of gateways holding a live SA of that certificate."""
        ...


class NoLiveSessions:
    """Used when no package provides a probe: nothing is known."""

    def sessions(self, gateways: Iterable[Mapping[str, Any]], timeout: float = 1.0) -> dict[str, GatewaySessions]:
        return {}

    def holders(self, targets: Sequence[CertificateInfo], sessions: Mapping[str, GatewaySessions]
                ) -> dict[str, list[str]]:
        return {}


def live_session_probe(roots: Sequence[Any] = ()) -> LiveSessionProbe:
    """The probe registered under the ``ikepki.live_sessions`` entry point group (first by name).
    ``roots`` (the deployment's root certificates) are trusted, besides the system roots, for
    gateways answering over HTTPS with an ikepki-issued certificate."""
    for ep in sorted(entry_points(group=LIVE_SESSIONS_GROUP), key=lambda e: e.name):
        try:
            probe: LiveSessionProbe = ep.load()(roots)
            return probe
        except Exception as exc:  # a broken plug-in must not stop an incident response
            log.warning("live session probe %s unavailable: %s", ep.name, exc)
    return NoLiveSessions()


def live_sas(targets: Sequence[CertificateInfo], gateways: Iterable[Mapping[str, Any]],
             probe: LiveSessionProbe | None = None) -> dict[str, list[str]]:
    """serial hex -> gateways holding a live SA of it; only for selections up to LIVE_SA_LIMIT."""
    if not targets or len(targets) > LIVE_SA_LIMIT:
        return {}
    probe = probe or live_session_probe()
    return probe.holders(targets, probe.sessions(gateways))


# -- execution ---------------------------------------------------------------------------------

class RevokingAuthority(Protocol):
    """What execution needs from :class:`ca.authority.Authority`."""

    def revoke(self, request: RevocationRequest) -> list[CertificateInfo]: ...

    def block_device(self, device_id: str, requester: Requester, reason: str | None = None,
                     blocked: bool = True) -> None: ...


class RevocationStore(TargetReader, Protocol):
    def gateways(self) -> list[dict[str, Any]]: ...


def would_change(info: CertificateInfo, hold: bool) -> bool:
    if info.status is CertStatus.revoked:
        return False
    return not (hold and info.status is CertStatus.hold)


def execute(authority: RevokingAuthority, targets: Sequence[CertificateInfo], reason: RevocationReason,
            requester: Requester, block_device: bool, invalidity_date: datetime | None = None
            ) -> tuple[list[CertificateInfo], list[str]]:
    """Revoke through the Authority in chunks (one transaction each: revocation rows, outbox
    events and delivery rows together); returns (changed, devices blocked)."""
    todo = [t.serial for t in targets if would_change(t, reason is RevocationReason.certificateHold)]
    done: list[CertificateInfo] = []
    for i in range(0, len(todo), CHUNK):
        done += authority.revoke(RevocationRequest(tuple(todo[i:i + CHUNK]), reason, requester, invalidity_date,
                                                   block_devices=False))
    blocked: list[str] = []
    if block_device:
        devices = dict.fromkeys(t.device_id or (f"ek:{t.ek_fingerprint}" if t.ek_fingerprint else "") for t in targets)
        for device in devices:
            if device:
                authority.block_device(device, requester, reason.name)
                blocked.append(device)
    return done, blocked


@dataclass
class RevocationOutcome:
    """What a revocation run selected and changed (a dry run: what it would change)."""

    dry_run: bool
    reason: RevocationReason
    targets: list[CertificateInfo]  # after execution: the changed ones (new state) first
    not_found: list[int]
    gateways: list[str]  # enabled gateways that get a push for each revoked serial
    revoked: list[CertificateInfo] = field(default_factory=list)
    unchanged: list[CertificateInfo] = field(default_factory=list)
    blocked_devices: list[str] = field(default_factory=list)
    live_sas: dict[str, list[str]] = field(default_factory=dict)  # dry run: serial hex -> gateway names


def revoke_selected(store: RevocationStore, authority: RevokingAuthority, sel: Selector, reason: RevocationReason,
                    requester: Requester, block_device: bool, dry_run: bool,
                    invalidity_date: datetime | None = None, max_targets: int = 100_000,
                    probe: LiveSessionProbe | None = None) -> RevocationOutcome:
    """Select, then (unless ``dry_run``) revoke. An unknown serial refuses the whole run before
    anything changes."""
    found = select_targets(store, sel, max_targets)
    gateways = [g for g in store.gateways() if g["enabled"]]
    out = RevocationOutcome(dry_run, reason, found.targets, found.not_found, [g["name"] for g in gateways])
    if dry_run:
        out.live_sas = live_sas(found.targets, gateways, probe)
        return out
    if found.not_found:
        raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial "
                                            f"{', '.join(format(s, 'x') for s in found.not_found[:20])}; "
                                            "nothing revoked")
    done, out.blocked_devices = execute(authority, found.targets, reason, requester, block_device, invalidity_date)
    changed = {d.serial for d in done}
    out.revoked = done
    out.unchanged = [t for t in found.targets if t.serial not in changed]
    out.targets = done + out.unchanged
    return out
