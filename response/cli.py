"""``ikepki incidents list|show|approve|reject``: what the alert hooks did and decisions on the
incidents the blast-radius guard parked — on the local deployment (``--dir``) or a remote server
through the admin API (``--server URL --token FILE [--ca-bundle FILE]``, revoker role to decide).
Exit codes as every ikepki command (3 not found, 4 not pending, 7 unauthorized/forbidden)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from ca.cli.common import (
    DEFAULT_DIR,
    ConfigOption,
    DirOption,
    JsonOption,
    cli_errors,
    cli_principal,
    console,
    print_json,
)
from ca.cli.remote import AdminClient, BundleOption, ServerOption, TokenOption, remote_admin
from ca.cli.render import Column, render

app = typer.Typer(no_args_is_help=True, help="Incidents from alert hooks: list, show, approve, reject.")


class _Local:
    def __init__(self, directory: Path, config: Path | None) -> None:
        from ca.cli.common import open_deployment
        from response.service import Response

        self.resp = Response(open_deployment(directory, config))

    def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return [i.wire() for i in self.resp.store.list(status, limit)]

    def show(self, incident_id: int) -> dict[str, Any]:
        from ca.errors import ErrorKind, PKIError

        inc = self.resp.store.get(incident_id)
        if inc is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"no incident {incident_id}")
        return inc.wire()

    def decide(self, incident_id: int, approve: bool, note: str | None) -> dict[str, Any]:
        return self.resp.engine.decide(incident_id, approve, cli_principal(), "cli", "", note).wire()


class _Remote:
    """``/admin/v1/incidents`` through the admin API client (:class:`ca.cli.remote.AdminClient`)."""

    def __init__(self, api: AdminClient) -> None:
        self.api = api

    def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        query = f"?limit={limit}" + (f"&status={status}" if status else "")
        return list(self.api.call("GET", f"/incidents{query}"))

    def show(self, incident_id: int) -> dict[str, Any]:
        return dict(self.api.call("GET", f"/incidents/{incident_id}"))

    def decide(self, incident_id: int, approve: bool, note: str | None) -> dict[str, Any]:
        return dict(self.api.call("POST", f"/incidents/{incident_id}/{'approve' if approve else 'reject'}",
                                  {"note": note}))


def _backend(directory: Path, config: Path | None, server: str | None, token: Path | None,
             ca_bundle: Path | None) -> _Local | _Remote:
    api = remote_admin(server, token, ca_bundle)
    return _Local(directory, config) if api is None else _Remote(api)


@app.command("list")
@cli_errors
def list_(status: Annotated[str | None, typer.Option("--status", help="pending, executed, approved, rejected, "
                                                      "dry-run, no-targets, released, failed")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
          server: ServerOption = None, token: TokenOption = None, ca_bundle: BundleOption = None,
          directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Incidents, newest first."""
    items = _backend(directory, config, server, token, ca_bundle).list(status, limit)
    if json_out:
        print_json(items)
        return
    # alert-derived text (rule, target, guard...) is data, never rich markup: render prints Text cells
    columns = [Column("id", key=True), Column("created"), Column("status"), Column("source"), Column("rule"),
               Column("action"), Column("target", key=True), Column("certs"), Column("guard")]
    render(console, columns, [[str(i["id"]), str(i["created_at"])[:19], str(i["status"]), str(i["source"]),
                               str(i["rule"]), str(i["action"]), f"{i['target_kind']}:{i['target_value']}",
                               str(len(i["serials"])), str(i["guard"] or "-")] for i in items], title="incidents")


@app.command()
@cli_errors
def show(incident_id: int, server: ServerOption = None, token: TokenOption = None, ca_bundle: BundleOption = None,
         directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """One incident with its plan, its alert and its decision."""
    inc = _backend(directory, config, server, token, ca_bundle).show(incident_id)
    if json_out:
        print_json(inc)
        return
    for key, value in inc.items():
        console.print(Text(f"{key}: ", style="bold") + Text(str(value)), highlight=False)


def _decide(incident_id: int, approve: bool, note: str | None, backend: _Local | _Remote, json_out: bool) -> None:
    inc = backend.decide(incident_id, approve, note)
    if json_out:
        print_json(inc)
    else:
        console.print(Text(f"incident {inc['id']}: {inc['status']} ({len(inc['changed'])} certificate(s) changed)"),
                      highlight=False)


@app.command()
@cli_errors
def approve(incident_id: int, note: Annotated[str | None, typer.Option("--note")] = None,
            server: ServerOption = None, token: TokenOption = None, ca_bundle: BundleOption = None,
            directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Execute a pending incident's plan now (it is pushed to gateways at once)."""
    _decide(incident_id, True, note, _backend(directory, config, server, token, ca_bundle), json_out)


@app.command()
@cli_errors
def reject(incident_id: int, note: Annotated[str | None, typer.Option("--note")] = None,
           server: ServerOption = None, token: TokenOption = None, ca_bundle: BundleOption = None,
           directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Close a pending incident without changing anything."""
    _decide(incident_id, False, note, _backend(directory, config, server, token, ca_bundle), json_out)
