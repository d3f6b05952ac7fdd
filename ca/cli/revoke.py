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

Target selection, guards and execution are :mod:`ca.revocation` (shared with the admin API in
``enrollment.admin``); this module parses options and prints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ca.cli.common import (
    DEFAULT_DIR,
    EXIT_DRY_RUN,
    ConfigOption,
    DirOption,
    JsonOption,
    cli_errors,
    cli_principal,
    console,
    err_console,
    open_deployment,
    print_json,
)
from ca.cli.remote import AdminClient, BundleOption, ServerOption, TokenOption, remote_admin
from ca.cli.render import Column, render
from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, Requester, RevocationReason, parse_serial
from ca.revocation import (
    RevocationOutcome,
    Selector,
    live_session_probe,
    parse_reason,
    read_serials_file,
    revoke_selected,
)

REMOTE_CHUNK = 5000  # serials per admin API request


def selector_wire(sel: Selector) -> dict[str, Any]:
    """The selector as the admin API's ``RevocationRequest`` fields (serials hex)."""
    out: dict[str, Any] = {"serials": [format(s, "x") for s in sel.serials]}
    for key in ("device_id", "identity", "profile", "subject_contains", "san_contains", "user"):
        if getattr(sel, key):
            out[key] = getattr(sel, key)
    for key in ("expires_before", "expires_after"):
        if getattr(sel, key):
            out[key] = getattr(sel, key).isoformat()
    if sel.all_of_profile:
        out["all_of_profile"] = True
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


def outcome_json(out: RevocationOutcome) -> dict[str, Any]:
    """The same shape as the admin API's ``RevocationResult``."""
    result: dict[str, Any] = {"dry_run": out.dry_run, "reason": out.reason.name,
                              "targets": [cert_json(t) for t in out.targets],
                              "not_found": [format(s, "x") for s in out.not_found], "gateways": out.gateways,
                              "revoked": [t.serial_hex for t in out.revoked],
                              "unchanged": [t.serial_hex for t in out.unchanged],
                              "blocked_devices": out.blocked_devices}
    if out.dry_run:
        result["live_sas"] = out.live_sas
    return result


class LocalBackend:
    """The deployment in DIR, in-process (the Authority and the store)."""

    def __init__(self, directory: Path, config: Path | None) -> None:
        self.dep = open_deployment(directory, config)

    def revoke(self, sel: Selector, reason: RevocationReason, block_device: bool, dry_run: bool) -> dict[str, Any]:
        return outcome_json(revoke_selected(self.dep.store, self.dep.authority, sel, reason,
                                            Requester("cli", cli_principal()), block_device, dry_run,
                                            probe=live_session_probe([self.dep.root]) if dry_run else None))

    def deliveries(self, serials: Sequence[str]) -> list[dict[str, Any]]:
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
                for row in self.dep.store.deliveries([int(s, 16) for s in serials])]

    def unhold(self, serial: int) -> dict[str, Any]:
        return cert_json(self.dep.authority.release_hold(serial, Requester("cli", cli_principal())))


class RemoteBackend:
    """Revocations through a server's admin API (:class:`ca.cli.remote.AdminClient`)."""

    def __init__(self, api: AdminClient) -> None:
        self.api = api

    def revoke(self, sel: Selector, reason: RevocationReason, block_device: bool, dry_run: bool) -> dict[str, Any]:
        wire = selector_wire(sel)
        serials = wire.pop("serials")
        hold = reason is RevocationReason.certificateHold
        common = {"reason": reason.name, "hold": hold, "block_device": block_device, "dry_run": dry_run}
        chunks = [serials[i:i + REMOTE_CHUNK] for i in range(0, len(serials), REMOTE_CHUNK)] or [[]]
        if not dry_run and len(chunks) > 1:  # refuse before changing anything if a serial is unknown
            self._merge([self.api.call("POST", "/revocations", {**common, "dry_run": True, "serials": c})
                         for c in chunks], strict=True)
        results = [self.api.call("POST", "/revocations", {**common, **(wire if i == 0 else {}), "serials": c})
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
            rows += self.api.call("POST", "/deliveries/search", {"serials": list(serials[i:i + REMOTE_CHUNK]),
                                                             "limit": 100_000})
        return rows

    def unhold(self, serial: int) -> dict[str, Any]:
        return dict(self.api.call("DELETE", f"/revocations/{format(serial, 'x')}"))


def backend_for(directory: Path, config: Path | None, server: str | None, token: Path | None,
                ca_bundle: Path | None) -> LocalBackend | RemoteBackend:
    api = remote_admin(server, token, ca_bundle)
    return LocalBackend(directory, config) if api is None else RemoteBackend(api)


# -- output ------------------------------------------------------------------------------------

PLAN_COLUMNS = (Column("serial", key=True), Column("identity", key=True), Column("device", key=True),
                Column("profile"), Column("status"), Column("expires"), Column("live SAs on"))
PUSH_COLUMNS = (Column("gateway", key=True), Column("kind"), Column("delivered"), Column("when"), Column("after"),
                Column("last error"))


def _identity(t: dict[str, Any]) -> str:
    return ", ".join(t.get("sans") or []) or t.get("subject", "")


def print_plan(result: dict[str, Any], title: str, limit: int = 200) -> None:
    live = result.get("live_sas") or {}
    targets = result.get("targets", [])
    rows = [[t["serial"], _identity(t), t.get("device_id") or "-", t["profile"], t["status"],
             str(t["not_after"])[:16].replace("T", " ") + "Z", ", ".join(live.get(t["serial"], [])) or "-"]
            for t in targets[:limit]]
    render(console, PLAN_COLUMNS, rows, title)
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
    rows = []
    for g in summary.values():
        after = "-"
        if g["last_delivered_at"] and revoked_at:
            delta = datetime.fromisoformat(g["last_delivered_at"]) - datetime.fromisoformat(revoked_at)
            after = f"{delta.total_seconds() * 1000:.0f} ms"
        rows.append([g["gateway"], g["kind"] or "-", f"{g['delivered']}/{g['total']}",
                     g["last_delivered_at"] or "pending", after, g["last_error"] or "-"])
    render(console, PUSH_COLUMNS, rows, "push to gateways")


# -- commands ----------------------------------------------------------------------------------

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
           user: Annotated[str | None, typer.Option("--user", help="Every certificate of this identity-provider "
                                                    "user (<iss>#<sub>, sub or email).")] = None,
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
                   _utc(expires_before), _utc(expires_after), all_of_profile, user)
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
