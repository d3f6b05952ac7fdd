"""``ikepki revoke`` / ``ikepki unhold``: incident response from the command line.

Targets: serials, ``--device``, ``--identity``, ``--profile`` with a filter, ``--from-file``
(CSV or JSON lines). Dry run by default: a table of what would change (serial, identity,
device, profile, expiry, gateways holding live SAs of it when known) and, on a TTY, a
confirmation prompt; ``--yes`` executes. After executing, the push to every gateway is
followed for ``--wait`` seconds and reported (delivered or not, and when).

Backends: the local deployment in-process (``--dir``) or a remote server through the admin API
(``--server URL --token FILE [--ca-bundle FILE]``). Exit codes: see :mod:`ca.cli.common`
(0 done, 3 a serial does not exist, 5 bad reason or selector, 7 unauthorized/forbidden,
10 dry run: nothing changed).

The target selection and live-SA lookup here are shared with the admin API
(``enrollment.admin``), so both front ends select exactly the same certificates.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ca.cli.common import (
    DEFAULT_DIR,
    EXIT_DRY_RUN,
    ConfigOption,
    DirOption,
    JsonOption,
    cli_errors,
    console,
    err_console,
    open_deployment,
    print_json,
)
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

CHUNK = 1000  # serials per Authority.revoke transaction
REMOTE_CHUNK = 5000  # serials per admin API request
MAX_FILE_BYTES = 64 * 1024 * 1024
SAN_PREFIXES = ("email:", "DNS:", "IP:")
LIVE_SA_LIMIT = 1000  # look up live SAs only for selections up to this size


# -- target selection (shared with the admin API) ---------------------------------------------

def parse_reason(name: str | None, hold: bool) -> RevocationReason:
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
    subject_contains: str | None = None
    san_contains: str | None = None
    expires_before: datetime | None = None
    expires_after: datetime | None = None
    all_of_profile: bool = False

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"serials": [format(s, "x") for s in self.serials]}
        for key in ("device_id", "identity", "profile", "subject_contains", "san_contains"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        for key in ("expires_before", "expires_after"):
            if getattr(self, key):
                out[key] = getattr(self, key).isoformat()
        if self.all_of_profile:
            out["all_of_profile"] = True
        return out


@dataclass
class Selection:
    targets: list[CertificateInfo] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)


def _queries(sel: Selector, limit: int) -> list[CertificateQuery]:
    queries: list[CertificateQuery] = []
    if sel.device_id:
        queries.append(CertificateQuery(device_id=sel.device_id, limit=limit))
        if sel.device_id.startswith("ek:"):
            queries.append(CertificateQuery(ek_fingerprint=sel.device_id[3:], limit=limit))
    if sel.identity:
        queries += [CertificateQuery(san=form, limit=limit) for form in identity_forms(sel.identity)]
    narrowed = any((sel.subject_contains, sel.san_contains, sel.expires_before, sel.expires_after))
    if sel.profile:
        if not narrowed and not sel.all_of_profile:
            raise PKIError(ErrorKind.BAD_REQUEST, "a profile selector needs a filter (subject, SAN, expiry) "
                                                  "or --all-of-profile")
        queries.append(CertificateQuery(profile=sel.profile, subject_contains=sel.subject_contains,
                                        expires_before=sel.expires_before, expires_after=sel.expires_after,
                                        limit=limit))
    elif narrowed:
        raise PKIError(ErrorKind.BAD_REQUEST, "subject/SAN/expiry filters narrow a --profile selector")
    return queries


def select_targets(store: Any, sel: Selector, max_targets: int = 100_000) -> Selection:
    """The union of the selectors, each certificate once, serials first in the given order."""
    out = Selection()
    seen: dict[int, CertificateInfo] = {}
    found = get_many(store, sel.serials)
    for serial in sel.serials:
        info = found.get(serial)
        if info is None:
            out.not_found.append(serial)
        else:
            seen.setdefault(serial, info)
    queries = _queries(sel, max_targets)
    if not sel.serials and not queries:
        raise PKIError(ErrorKind.BAD_REQUEST, "no targets: give serials, --device, --identity, --profile or "
                                              "--from-file")
    for q in queries:
        for info in store.search(q):
            if q.san and q.san not in info.sans:
                continue  # the store matches SANs by substring
            if q.profile and sel.san_contains and not any(sel.san_contains.lower() in s.lower() for s in info.sans):
                continue
            seen.setdefault(info.serial, info)
    if len(seen) > max_targets:
        raise PKIError(ErrorKind.BAD_REQUEST, f"{len(seen)} certificates selected; at most {max_targets}")
    out.targets = list(seen.values())
    return out


def get_many(store: Any, serials: Sequence[int]) -> dict[int, CertificateInfo]:
    """Certificates by serial, 500 per query (a bulk incident names thousands)."""
    from sqlalchemy import select

    from ca.store.sql import CERTS, _info

    hexes = [format(s, "x") for s in dict.fromkeys(serials)]
    out: dict[int, CertificateInfo] = {}
    with store.db.read() as conn:
        for i in range(0, len(hexes), 500):
            for row in conn.execute(select(CERTS).where(CERTS.c.serial.in_(hexes[i:i + 500]))):
                info = _info(row)
                out[info.serial] = info
    return out


def would_change(info: CertificateInfo, hold: bool) -> bool:
    if info.status is CertStatus.revoked:
        return False
    return not (hold and info.status is CertStatus.hold)


def execute(dep: Any, targets: Sequence[CertificateInfo], reason: RevocationReason, requester: Requester,
            block_device: bool, invalidity_date: datetime | None = None) -> tuple[list[CertificateInfo], list[str]]:
    """Revoke through the Authority in chunks (one transaction each: revocation rows, outbox
    events and delivery rows together); returns (changed, devices blocked)."""
    todo = [t.serial for t in targets if would_change(t, reason is RevocationReason.certificateHold)]
    done: list[CertificateInfo] = []
    for i in range(0, len(todo), CHUNK):
        done += dep.authority.revoke(RevocationRequest(tuple(todo[i:i + CHUNK]), reason, requester,
                                                       invalidity_date, block_devices=False))
    blocked: list[str] = []
    if block_device:
        devices = dict.fromkeys(t.device_id or (f"ek:{t.ek_fingerprint}" if t.ek_fingerprint else "") for t in targets)
        for device in devices:
            if device:
                dep.authority.block_device(device, requester, reason.name)
                blocked.append(device)
    return done, blocked


# -- live SAs on gateways (best effort, "if known") ------------------------------------------

def identity_keys(identities: Iterable[str], subject: str = "") -> set[str]:
    """IKE identities a certificate may present, normalised for comparison with an SA's peer ID."""
    keys = {i.partition(":")[2].strip().lower() for i in identities if ":" in i}
    if subject:
        keys.add(dn_key(subject))
    keys.discard("")
    return keys


def dn_key(dn: str) -> str:
    """Order-insensitive DN key: strongSwan prints ``C=US, O=x, CN=y``; RFC 4514 ``CN=y,O=x,C=US``."""
    parts = sorted(p.strip().lower() for p in dn.replace(", ", ",").split(",") if "=" in p)
    return "dn:" + "|".join(parts)


def peer_keys(peer_id: str) -> set[str]:
    return {peer_id.strip().lower(), dn_key(peer_id)} if "=" in peer_id else {peer_id.strip().lower()}


@dataclass(frozen=True)
class GatewaySessions:
    peers: frozenset[str]  # normalised peer identities
    serials: frozenset[int]  # peer certificate serials, when the gateway reports them


def _vici_sessions(url: str, timeout: float) -> GatewaySessions:
    import vici

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(url[len("unix://"):])
        peers: set[str] = set()
        for entry in vici.Session(sock).list_sas({"noblock": "yes"}):
            for sa in entry.values():
                peers |= peer_keys(sa.get("remote-id", b"").decode(errors="replace"))
        return GatewaySessions(frozenset(peers), frozenset())
    finally:
        sock.close()


def _responder_sessions(url: str, timeout: float) -> GatewaySessions:
    import httpx

    sas = httpx.get(url.rstrip("/") + "/v1/sas", timeout=timeout).json().get("sas", [])
    peers = set().union(*(peer_keys(str(sa["peer_id"])) for sa in sas if sa.get("peer_id"))) if sas else set()
    serials = {int(sa["serial"], 16) for sa in sas if sa.get("serial")}
    return GatewaySessions(frozenset(peers), frozenset(serials))


def gateway_sessions(gateways: Iterable[dict[str, Any]], timeout: float = 1.0) -> dict[str, GatewaySessions]:
    """Live SAs per enabled gateway that can tell (VICI, bundled responder); others are unknown."""
    out: dict[str, GatewaySessions] = {}
    for g in gateways:
        if not g.get("enabled", True):
            continue
        try:
            if g["kind"] == "vici":
                out[g["name"]] = _vici_sessions(g["url"], timeout)
            elif g["kind"] == "responder":
                out[g["name"]] = _responder_sessions(g["url"], timeout)
        except Exception:  # noqa: S112  (best effort: a gateway that cannot tell is "unknown")
            continue
    return out


def live_sas(targets: Sequence[CertificateInfo], gateways: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """serial hex -> names of gateways holding a live SA of that certificate's identity."""
    if not targets or len(targets) > LIVE_SA_LIMIT:
        return {}
    sessions = gateway_sessions(gateways)
    out: dict[str, list[str]] = {}
    for t in targets:
        keys = identity_keys(t.sans, t.subject)
        names = [n for n, s in sessions.items() if keys & s.peers or t.serial in s.serials]
        if names:
            out[t.serial_hex] = names
    return out


# -- backends ----------------------------------------------------------------------------------

def cert_json(info: CertificateInfo) -> dict[str, Any]:
    return {"serial": info.serial_hex, "issuer": info.issuer_id, "subject": info.subject, "sans": list(info.sans),
            "profile": info.profile, "status": info.status.value, "not_before": info.not_before.isoformat(),
            "not_after": info.not_after.isoformat(),
            "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
            "reason": info.revocation_reason.name if info.revocation_reason else None,
            "device_id": info.device_id, "ek_fingerprint": info.ek_fingerprint, "channel": info.channel,
            "requester": info.requester}


class LocalBackend:
    """The deployment in DIR, in-process (the Authority and the store)."""

    def __init__(self, directory: Path, config: Path | None) -> None:
        self.dep = open_deployment(directory, config)

    def revoke(self, sel: Selector, reason: RevocationReason, block_device: bool, dry_run: bool) -> dict[str, Any]:
        found = select_targets(self.dep.store, sel)
        gateways = [g for g in self.dep.store.gateways() if g["enabled"]]
        result: dict[str, Any] = {"dry_run": dry_run, "reason": reason.name,
                                  "targets": [cert_json(t) for t in found.targets],
                                  "not_found": [format(s, "x") for s in found.not_found],
                                  "gateways": [g["name"] for g in gateways], "revoked": [], "unchanged": [],
                                  "blocked_devices": []}
        if dry_run:
            result["live_sas"] = live_sas(found.targets, gateways)
            return result
        if found.not_found:
            raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial {', '.join(result['not_found'][:20])}; "
                                                "nothing revoked")
        done, blocked = execute(self.dep, found.targets, reason, Requester("cli", _whoami()), block_device)
        changed = {d.serial for d in done}
        result.update(revoked=[d.serial_hex for d in done], blocked_devices=blocked,
                      unchanged=[t.serial_hex for t in found.targets if t.serial not in changed],
                      targets=[cert_json(d) for d in done] + [cert_json(t) for t in found.targets
                                                              if t.serial not in changed])
        return result

    def deliveries(self, serials: Sequence[str]) -> list[dict[str, Any]]:
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
                for row in self.dep.store.deliveries([int(s, 16) for s in serials])]

    def unhold(self, serial: int) -> dict[str, Any]:
        return cert_json(self.dep.authority.release_hold(serial, Requester("cli", _whoami())))


class RemoteBackend:
    """A server's admin API (``/admin/v1``) with a bearer token."""

    def __init__(self, url: str, token_file: Path, ca_bundle: Path | None) -> None:
        import ssl

        import httpx

        token = token_file.read_text().strip()
        self.base = url.rstrip("/") + "/admin/v1"
        verify = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else ssl.create_default_context()
        self.client = httpx.Client(verify=verify, timeout=300,
                                   headers={"authorization": f"Bearer {token}", "user-agent": "ikepki-cli"})

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            resp = self.client.request(method, self.base + path, json=body)
        except httpx.HTTPError as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"admin API unreachable: {exc}") from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = None
            kind = {401: ErrorKind.UNAUTHORIZED, 403: ErrorKind.FORBIDDEN, 404: ErrorKind.NOT_FOUND,
                    409: ErrorKind.CONFLICT, 400: ErrorKind.BAD_REQUEST, 422: ErrorKind.BAD_REQUEST,
                    503: ErrorKind.UNAVAILABLE}.get(resp.status_code, ErrorKind.INTERNAL)
            raise PKIError(kind, f"admin API: HTTP {resp.status_code}: {detail or resp.text[:200]}")
        return resp.json() if resp.content else None

    def revoke(self, sel: Selector, reason: RevocationReason, block_device: bool, dry_run: bool) -> dict[str, Any]:
        wire = sel.wire()
        serials = wire.pop("serials")
        hold = reason is RevocationReason.certificateHold
        common = {"reason": reason.name, "hold": hold, "block_device": block_device, "dry_run": dry_run}
        chunks = [serials[i:i + REMOTE_CHUNK] for i in range(0, len(serials), REMOTE_CHUNK)] or [[]]
        if not dry_run and len(chunks) > 1:  # refuse before changing anything if a serial is unknown
            self._merge([self._call("POST", "/revocations", {**common, "dry_run": True, "serials": c})
                         for c in chunks], strict=True)
        results = [self._call("POST", "/revocations", {**common, **(wire if i == 0 else {}), "serials": c})
                   for i, c in enumerate(chunks)]
        return self._merge(results, strict=False)

    @staticmethod
    def _merge(results: list[dict[str, Any]], strict: bool) -> dict[str, Any]:
        out = dict(results[0])
        out.setdefault("live_sas", {})
        for r in results[1:]:
            for key in ("targets", "revoked", "unchanged", "not_found", "blocked_devices"):
                out[key] = out.get(key, []) + r.get(key, [])
            out["live_sas"].update(r.get("live_sas") or {})
        if strict and out.get("not_found"):
            raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial {', '.join(out['not_found'][:20])}; "
                                                "nothing revoked")
        return out

    def deliveries(self, serials: Sequence[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for i in range(0, len(serials), REMOTE_CHUNK):
            rows += self._call("POST", "/deliveries/search", {"serials": list(serials[i:i + REMOTE_CHUNK]),
                                                             "limit": 100_000})
        return rows

    def unhold(self, serial: int) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/revocations/{format(serial, 'x')}"))


def _whoami() -> str:
    import getpass

    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "cli"


def backend_for(directory: Path, config: Path | None, server: str | None, token: Path | None,
                ca_bundle: Path | None) -> LocalBackend | RemoteBackend:
    if server:
        if token is None:
            raise PKIError(ErrorKind.CONFIG, "--server needs --token FILE (an admin API token)")
        return RemoteBackend(server, token, ca_bundle)
    return LocalBackend(directory, config)


# -- bulk input --------------------------------------------------------------------------------

def read_serials_file(path: Path) -> list[int]:
    """CSV (a ``serial`` column, else the first column; ``#`` comments) or JSON lines (a string
    or an object with ``serial``)."""
    raw = path.read_bytes()
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


# -- output ------------------------------------------------------------------------------------

def _identity(t: dict[str, Any]) -> str:
    return ", ".join(t.get("sans") or []) or t.get("subject", "")


def print_plan(result: dict[str, Any], title: str, limit: int = 200) -> None:
    table = Table(title=title)
    for col in ("serial", "identity", "device", "profile", "status", "expires", "live SAs on"):
        table.add_column(col)
    live = result.get("live_sas") or {}
    targets = result.get("targets", [])
    for t in targets[:limit]:
        table.add_row(t["serial"], _identity(t), t.get("device_id") or "-", t["profile"], t["status"],
                      str(t["not_after"])[:16].replace("T", " ") + "Z", ", ".join(live.get(t["serial"], [])) or "-")
    console.print(table)
    if len(targets) > limit:
        console.print(f"… and {len(targets) - limit} more")
    if result.get("not_found"):
        err_console.print(f"not found: {', '.join(result['not_found'][:50])}", highlight=False)
    if result.get("gateways"):
        console.print(f"push goes to: {', '.join(result['gateways'])}", highlight=False)


def follow_push(backend: Any, serials: Sequence[str], wait: float) -> dict[str, dict[str, Any]]:
    """Poll delivery state until nothing is pending (or ``wait`` s); one summary per gateway."""
    deadline = time.monotonic() + wait
    summary: dict[str, dict[str, Any]] = {}
    while True:
        rows = backend.deliveries(serials) if serials else []
        summary = {}
        for r in rows:
            g = summary.setdefault(r["gateway"], {"gateway": r["gateway"], "kind": r.get("gateway_kind"),
                                                  "total": 0, "delivered": 0, "pending": 0,
                                                  "first_delivered_at": None, "last_delivered_at": None,
                                                  "last_error": None})
            g["total"] += 1
            if r["status"] == "delivered":
                g["delivered"] += 1
                at = r.get("delivered_at")
                g["first_delivered_at"] = min(filter(None, (g["first_delivered_at"], at)), default=None)
                g["last_delivered_at"] = max(filter(None, (g["last_delivered_at"], at)), default=None)
            else:
                g["pending"] += 1
                g["last_error"] = r.get("last_error") or g["last_error"]
        if not any(g["pending"] for g in summary.values()) or time.monotonic() >= deadline:
            return summary
        time.sleep(0.05)


def print_push(summary: dict[str, dict[str, Any]], revoked_at: str | None) -> None:
    if not summary:
        console.print("no gateways registered: nothing pushed")
        return
    table = Table(title="push to gateways")
    for col in ("gateway", "kind", "delivered", "when", "after", "last error"):
        table.add_column(col)
    for g in summary.values():
        after = "-"
        if g["last_delivered_at"] and revoked_at:
            delta = datetime.fromisoformat(g["last_delivered_at"]) - datetime.fromisoformat(revoked_at)
            after = f"{delta.total_seconds() * 1000:.0f} ms"
        table.add_row(g["gateway"], g["kind"] or "-", f"{g['delivered']}/{g['total']}",
                      g["last_delivered_at"] or "pending", after, g["last_error"] or "-")
    console.print(table)


# -- commands ----------------------------------------------------------------------------------

ServerOption = Annotated[str | None, typer.Option("--server", envvar="IKEPKI_SERVER",
                                                  help="Admin API base URL, e.g. https://ca.example.test:8443.")]
TokenOption = Annotated[Path | None, typer.Option("--token", envvar="IKEPKI_ADMIN_TOKEN_FILE",
                                                  help="File holding an admin API bearer token.")]
BundleOption = Annotated[Path | None, typer.Option("--ca-bundle", help="CA bundle for the server's TLS cert.")]


def register(app: typer.Typer) -> None:
    app.command()(revoke)
    app.command()(unhold)


@cli_errors
def revoke(serials: Annotated[list[str] | None, typer.Argument(help="Serial numbers (hex).")] = None,
           reason: Annotated[str | None, typer.Option("--reason", help="RFC 5280 reason: keyCompromise, "
                                                      "affiliationChanged, superseded, cessationOfOperation, "
                                                      "privilegeWithdrawn, cACompromise, unspecified …")] = None,
           device: Annotated[str | None, typer.Option("--device", help="Every certificate of this device.")] = None,
           identity: Annotated[str | None, typer.Option("--identity", help="Every certificate with this "
                                                        "identity (email, DNS name, IP or SAN text).")] = None,
           profile: Annotated[str | None, typer.Option("--profile", help="Certificates of this profile "
                                                       "(with a filter below or --all-of-profile).")] = None,
           subject: Annotated[str | None, typer.Option("--subject", help="Profile filter: subject contains.")]
           = None,
           san_contains: Annotated[str | None, typer.Option("--san-contains", help="Profile filter.")] = None,
           expires_before: Annotated[datetime | None, typer.Option("--expires-before", help="Profile filter.")]
           = None,
           expires_after: Annotated[datetime | None, typer.Option("--expires-after", help="Profile filter.")]
           = None,
           all_of_profile: Annotated[bool, typer.Option("--all-of-profile")] = False,
           from_file: Annotated[Path | None, typer.Option("--from-file", help="Serials: CSV or JSON lines.")]
           = None,
           yes: Annotated[bool, typer.Option("--yes", help="Execute (default: dry run).")] = False,
           hold: Annotated[bool, typer.Option("--hold", help="Suspend (certificateHold) instead.")] = False,
           block_device: Annotated[bool, typer.Option("--block-device", help="Also refuse re-enrollment.")] = False,
           wait: Annotated[float, typer.Option("--wait", help="Seconds to follow the push to gateways.")] = 5.0,
           server: ServerOption = None, token: TokenOption = None, ca_bundle: BundleOption = None,
           directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Revoke certificates. Without --yes: shows what would change, asks on a TTY, changes nothing.

    Exit codes: 0 done, 3 a serial does not exist, 5 bad reason/selector/file, 6 database or HSM
    unavailable, 7 unauthorized or forbidden (remote), 10 dry run (nothing changed).
    """
    why = parse_reason(reason, hold)
    wanted = [parse_serial(s) for s in serials or []]
    if from_file is not None:
        wanted += read_serials_file(from_file)
    sel = Selector(tuple(dict.fromkeys(wanted)), device, identity, profile, subject, san_contains,
                   _utc(expires_before), _utc(expires_after), all_of_profile)
    backend = backend_for(directory, config, server, token, ca_bundle)
    if not yes:
        plan = backend.revoke(sel, why, block_device, dry_run=True)
        if not _confirmed(plan, why, json_out):
            raise typer.Exit(3 if plan.get("not_found") else EXIT_DRY_RUN)
    started = time.time()
    result = backend.revoke(sel, why, block_device, dry_run=False)
    revoked_at = next((t.get("revoked_at") for t in result.get("targets", []) if t["serial"] in
                       set(result.get("revoked", []))), None)
    summary = follow_push(backend, result.get("revoked", []), wait) if result.get("gateways") else {}
    _report(result, summary, revoked_at, time.time() - started, json_out)


def _confirmed(plan: dict[str, Any], why: RevocationReason, json_out: bool) -> bool:
    if json_out:
        print_json(plan)
        return False
    print_plan(plan, f"would {'hold' if why is RevocationReason.certificateHold else 'revoke'} "
                     f"({why.name}): {len(plan['targets'])} certificate(s); nothing changed yet")
    if plan.get("not_found") or not plan["targets"] or not sys.stdin.isatty():
        if plan["targets"] and not plan.get("not_found"):
            console.print("dry run: nothing changed — add --yes to execute")
        return False
    return typer.confirm(f"Revoke these {len(plan['targets'])} certificate(s) now?", default=False)


def _report(result: dict[str, Any], summary: dict[str, dict[str, Any]], revoked_at: str | None, elapsed: float,
            json_out: bool) -> None:
    if json_out:
        print_json({**result, "push": list(summary.values()), "elapsed_s": round(elapsed, 3)})
        return
    console.print(f"{'held' if result['reason'] == 'certificateHold' else 'revoked'} {len(result['revoked'])} "
                  f"certificate(s) ({result['reason']}); {len(result['unchanged'])} unchanged"
                  + (f"; blocked devices: {', '.join(result['blocked_devices'])}" if result["blocked_devices"]
                     else ""), highlight=False)
    if result.get("gateways"):
        print_push(summary, revoked_at)


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@cli_errors
def unhold(serial: str, server: ServerOption = None, token: TokenOption = None, ca_bundle: BundleOption = None,
           directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Release a certificateHold: the certificate is valid again."""
    info = backend_for(directory, config, server, token, ca_bundle).unhold(parse_serial(serial))
    if json_out:
        print_json(info)
    else:
        console.print(f"released hold on {info['serial']}: valid again", highlight=False)
