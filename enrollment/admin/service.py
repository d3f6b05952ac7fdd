"""What the admin API does, apart from HTTP: resolve revocation targets and execute them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertificateQuery, CertStatus, Requester, RevocationReason
from ca.model import RevocationRequest as CoreRevocation
from ca.store.sql import ADMIN_TOKENS, DEVICES

CHUNK = 1000  # serials per Authority.revoke transaction
SAN_PREFIXES = ("email:", "DNS:", "IP:")


def parse_serial(text: str) -> int:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise PKIError(ErrorKind.BAD_REQUEST, f"not a hex serial: {text[:50]!r}") from None
    if value <= 0 or value.bit_length() > 160:
        raise PKIError(ErrorKind.BAD_REQUEST, f"serial out of range: {text[:50]!r}")
    return value


def parse_reason(name: str, hold: bool) -> RevocationReason:
    if hold:
        return RevocationReason.certificateHold
    try:
        reason = RevocationReason.parse(name)
    except ValueError as exc:
        raise PKIError(ErrorKind.BAD_REQUEST, str(exc)) from None
    if reason is RevocationReason.removeFromCRL:
        raise PKIError(ErrorKind.BAD_REQUEST, "removeFromCRL is not a revocation reason; release the hold")
    return reason


def identity_forms(identity: str) -> list[str]:
    """``alice@x`` -> ``email:alice@x``; ``h1.x`` -> ``DNS:h1.x``; already prefixed: as is."""
    if identity.startswith(SAN_PREFIXES):
        kind, _, value = identity.partition(":")
        return [f"{kind}:{value.lower()}" if kind == "DNS" else identity]
    if "@" in identity:
        return [f"email:{identity}"]
    return [f"DNS:{identity.lower()}", f"IP:{identity}"]


@dataclass
class Selection:
    targets: list[CertificateInfo] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)


def select_targets(dep: Any, req: Any, max_targets: int) -> Selection:
    """The union of the request's selectors, in a stable order, each certificate once."""
    store = dep.store
    sel = Selection()
    seen: dict[int, CertificateInfo] = {}
    for text in req.serials:
        serial = parse_serial(text)
        info = store.get(serial)
        if info is None:
            sel.not_found.append(serial)
        else:
            seen.setdefault(serial, info)
    queries: list[CertificateQuery] = []
    if req.device_id:
        queries.append(CertificateQuery(device_id=req.device_id, limit=max_targets))
        if req.device_id.startswith("ek:"):
            queries.append(CertificateQuery(ek_fingerprint=req.device_id[3:], limit=max_targets))
    if req.identity:
        queries += [CertificateQuery(san=form, limit=max_targets) for form in identity_forms(req.identity)]
    if req.profile:
        narrowed = any((req.subject_contains, req.san_contains, req.expires_before, req.expires_after))
        if not narrowed and not req.all_of_profile:
            raise PKIError(ErrorKind.BAD_REQUEST, "a profile selector needs a filter (subject, SAN, expiry) "
                                                  "or all_of_profile")
        queries.append(CertificateQuery(profile=req.profile, subject_contains=req.subject_contains,
                                        expires_before=req.expires_before, expires_after=req.expires_after,
                                        limit=max_targets))
    elif req.subject_contains or req.san_contains or req.expires_before or req.expires_after:
        raise PKIError(ErrorKind.BAD_REQUEST, "subject/SAN/expiry filters narrow a profile selector")
    for q in queries:
        for info in store.search(q):
            if q.san and q.san not in info.sans:
                continue  # the store matches SANs by substring
            if q.profile and req.san_contains and not any(req.san_contains.lower() in s.lower() for s in info.sans):
                continue
            seen.setdefault(info.serial, info)
    if not req.serials and not queries:
        raise PKIError(ErrorKind.BAD_REQUEST, "no targets: give serials, a device, an identity or a profile")
    if len(seen) > max_targets:
        raise PKIError(ErrorKind.BAD_REQUEST, f"{len(seen)} certificates selected; at most {max_targets}")
    sel.targets = list(seen.values())
    return sel


def would_change(info: CertificateInfo, hold: bool) -> bool:
    if info.status is CertStatus.revoked:
        return False
    return not (hold and info.status is CertStatus.hold)


def execute(dep: Any, targets: list[CertificateInfo], reason: RevocationReason, requester: Requester,
            block_device: bool, invalidity_date: Any = None) -> tuple[list[CertificateInfo], list[str]]:
    """Revoke in chunks (one transaction each); returns (changed, devices blocked)."""
    todo = [t.serial for t in targets if would_change(t, reason is RevocationReason.certificateHold)]
    done: list[CertificateInfo] = []
    for i in range(0, len(todo), CHUNK):
        done += dep.authority.revoke(CoreRevocation(tuple(todo[i:i + CHUNK]), reason, requester, invalidity_date,
                                                    block_devices=False))
    blocked: list[str] = []
    if block_device:
        for device in dict.fromkeys(t.device_id or (f"ek:{t.ek_fingerprint}" if t.ek_fingerprint else None)
                                    for t in targets):
            if device:
                dep.authority.block_device(device, requester, reason.name)
                blocked.append(device)
    return done, blocked


def device(dep: Any, device_id: str) -> dict[str, Any] | None:
    with dep.db.read() as conn:
        row = conn.execute(select(DEVICES).where(DEVICES.c.device_id == device_id)).first()
    return dict(row._mapping) if row else None


def tokens(dep: Any) -> list[dict[str, Any]]:
    with dep.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(ADMIN_TOKENS.c.name, ADMIN_TOKENS.c.role, ADMIN_TOKENS.c.created_at, ADMIN_TOKENS.c.disabled)
            .order_by(ADMIN_TOKENS.c.id))]


def disable_token(dep: Any, name: str) -> None:
    with dep.db.write() as conn:
        if conn.execute(update(ADMIN_TOKENS).where(ADMIN_TOKENS.c.name == name).values(disabled=True)).rowcount != 1:
            raise PKIError(ErrorKind.NOT_FOUND, f"no admin token {name!r}")


def check_gateway_url(kind: str, url: str) -> None:
    if kind == "vici" and not url.startswith("unix:///"):
        raise PKIError(ErrorKind.BAD_REQUEST, "a vici gateway URL is unix:///path/to/charon.vici")
    if kind != "vici" and not url.startswith(("http://", "https://")):
        raise PKIError(ErrorKind.BAD_REQUEST, f"a {kind} gateway URL is http(s)://…")
