"""``ikepki gateways``: register push targets and watch delivery state."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from ca.cli.common import (
    DEFAULT_DIR,
    EXIT,
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
from ca.cli.render import Column, render
from ca.errors import ErrorKind, PKIError

gateways_app = typer.Typer(no_args_is_help=True, help="Gateways that receive revocation pushes.")
KINDS = ("vici", "responder", "webhook")


def check_gateway_url(kind: str, url: str) -> None:
    """vici: ``unix:///abs/path``; responder and webhook: ``http(s)://…``."""
    if kind not in KINDS:
        raise PKIError(ErrorKind.BAD_REQUEST, f"unknown gateway kind {kind!r} ({', '.join(KINDS)})")
    if len(url) > 1024:
        raise PKIError(ErrorKind.BAD_REQUEST, "URL too long")
    if kind == "vici" and not url.startswith("unix:///"):
        raise PKIError(ErrorKind.BAD_REQUEST, "a vici gateway URL is unix:///path/to/charon.vici")
    if kind != "vici" and not url.startswith(("http://", "https://")):
        raise PKIError(ErrorKind.BAD_REQUEST, f"a {kind} gateway URL is http(s)://…")


def _ts(value: datetime | None) -> str:
    return value.isoformat() if value else "-"


def _gateway_json(g: dict[str, Any]) -> dict[str, Any]:
    return {"id": g["id"], "name": g["name"], "kind": g["kind"], "url": g["url"], "enabled": bool(g["enabled"]),
            "pending": g.get("pending", 0), "oldest_pending": g.get("oldest_pending"),
            "last_success_at": g.get("last_success_at"), "last_error": g.get("last_error")}


@gateways_app.command("add")
@cli_errors
def add(name: Annotated[str, typer.Option("--name")], kind: Annotated[str, typer.Option("--kind", help="vici, "
        "responder or webhook")], url: Annotated[str, typer.Option("--url")],
        no_check: Annotated[bool, typer.Option("--no-check", help="Register without first sending a signed test "
                                               "event (e.g. the gateway is not up yet).")] = False,
        directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Register a gateway; revocations from now on are pushed to it.

    Unless --no-check, first proves the URL works: reachable, TLS when https (verified like the push
    worker does), and a push receiver that accepts ikepki's signer (a signed test event; vici: charon
    answers). Nothing is registered when the check fails (exit 5, or 6 when unreachable)."""
    check_gateway_url(kind, url)
    dep = open_deployment(directory, config)
    if any(g["name"] == name for g in dep.store.gateway_health()):
        raise PKIError(ErrorKind.CONFLICT, f"gateway {name!r} exists")
    result = None
    if not no_check:
        from ocsp.push.probe import probe

        result = probe(dep, kind, url)
        if not result.ok:
            raise PKIError(result.kind or ErrorKind.BAD_REQUEST,
                           f"gateway {name} not registered: {result.detail} (--no-check registers it anyway)")
    now = dep.clock.now()
    gid = dep.store.add_gateway(name, kind, url, now)
    dep.audit.append(now, cli_principal(), "gateway-add", "cli", gateway=name, kind=kind, url=url, checked=not no_check)
    if json_out:
        print_json({"id": gid, "name": name, "kind": kind, "url": url,
                    "check": result.as_json() if result else None})
    else:
        if url.startswith("http://"):
            err_console.print(f"warning: {url} is plain HTTP: events are signed, but anyone on the path sees "
                              "them", highlight=False, markup=False)
        console.print(f"gateway {name} ({kind}) registered: {url}"
                      + (f"\ncheck: {result.detail}" if result else " (not checked)"), highlight=False, markup=False)


@gateways_app.command("test")
@cli_errors
def test(name: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
         json_out: JsonOption = False) -> None:
    """Send a signed test event to a registered gateway and report the result.

    Exit 0 when it was accepted; 5 when the gateway answered but refused or is misconfigured
    (TLS, trust, wrong URL); 6 when it is unreachable; 3 when no such gateway."""
    from ocsp.push.probe import probe

    dep = open_deployment(directory, config)
    gateway = next((g for g in dep.store.gateway_health() if g["name"] == name), None)
    if gateway is None:
        raise PKIError(ErrorKind.NOT_FOUND, f"no gateway {name!r}")
    result = probe(dep, gateway["kind"], gateway["url"])
    dep.audit.append(dep.clock.now(), cli_principal(), "gateway-test", "cli", gateway=name, ok=result.ok)
    if json_out:
        print_json({"name": name, "kind": gateway["kind"], "url": gateway["url"], **result.as_json()})
        if not result.ok:
            raise typer.Exit(EXIT[result.kind or ErrorKind.BAD_REQUEST])
        return
    if not result.ok:
        raise PKIError(result.kind or ErrorKind.BAD_REQUEST, f"gateway {name}: {result.detail}")
    console.print(f"gateway {name}: ok — {result.detail}", highlight=False, markup=False)


def _set_enabled(name: str, enabled: bool, directory: Any, config: Any) -> None:
    dep = open_deployment(directory, config)
    dep.store.set_gateway_enabled(name, enabled)
    dep.audit.append(dep.clock.now(), cli_principal(), "gateway-enable" if enabled else "gateway-disable", "cli",
                     gateway=name)
    console.print(f"gateway {name} {'enabled' if enabled else 'disabled'}")


@gateways_app.command("enable")
@cli_errors
def enable(name: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None) -> None:
    """Resume pushes to a gateway (held deliveries go out)."""
    _set_enabled(name, True, directory, config)


@gateways_app.command("disable")
@cli_errors
def disable(name: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None) -> None:
    """Stop pushing to a gateway (pending deliveries wait; new revocations skip it)."""
    _set_enabled(name, False, directory, config)


@gateways_app.command("list")
@cli_errors
def list_(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Registered gateways."""
    status(directory, config, json_out)


@gateways_app.command("status")
@cli_errors
def status(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Per gateway: pending deliveries, oldest pending, last success, last error."""
    dep = open_deployment(directory, config)
    rows = [_gateway_json(g) for g in dep.store.gateway_health()]
    if json_out:
        print_json(rows)
        return
    render(console, (Column("name", key=True), Column("kind"), Column("url", key=True), Column("enabled"),
                     Column("pending"), Column("oldest pending"), Column("last success"), Column("last error")),
           [[g["name"], g["kind"], g["url"], "yes" if g["enabled"] else "no", str(g["pending"]),
             _ts(g["oldest_pending"]), _ts(g["last_success_at"]), g["last_error"] or "-"] for g in rows])


@gateways_app.command("deliveries")
@cli_errors
def deliveries(serial: Annotated[str | None, typer.Option("--serial", help="Only this certificate (hex).")] = None,
               state: Annotated[str | None, typer.Option("--status", help="pending, delivered or failed")] = None,
               limit: Annotated[int, typer.Option()] = 50, directory: DirOption = DEFAULT_DIR,
               config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Recent push deliveries, newest first."""
    from ca.cli.main import parse_serial

    dep = open_deployment(directory, config)
    rows = dep.store.deliveries([parse_serial(serial)] if serial else None, status=state, limit=limit)
    if json_out:
        print_json(rows)
        return
    render(console, (Column("serial", key=True), Column("event"), Column("gateway", key=True), Column("status"),
                     Column("attempts"), Column("delivered"), Column("last error")),
           [[r["serial"], r["kind"], r["gateway"], r["status"], str(r["attempts"]), _ts(r["delivered_at"]),
             r["last_error"] or "-"] for r in rows])
