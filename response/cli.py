"""``ikepki incidents list|show|approve|reject``: what the alert hooks did and decisions on the
incidents the blast-radius guard parked. Exit codes as every ikepki command (3 not found,
4 not pending)."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer
from rich.table import Table

from ca.cli.common import DEFAULT_DIR, ConfigOption, DirOption, JsonOption, cli_errors, console, print_json

app = typer.Typer(no_args_is_help=True, help="Incidents from alert hooks: list, show, approve, reject.")


def _service(directory: Any, config: Any) -> Any:
    from ca.cli.common import open_deployment
    from response.service import Response

    return Response(open_deployment(directory, config))


def _actor() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "cli"


@app.command("list")
@cli_errors
def list_(status: Annotated[str | None, typer.Option("--status", help="pending, executed, approved, rejected, "
                                                      "dry-run, no-targets, released, failed")] = None,
          limit: Annotated[int, typer.Option("--limit")] = 100,
          directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Incidents, newest first."""
    items = _service(directory, config).store.list(status, limit)
    if json_out:
        print_json([i.wire() for i in items])
        return
    table = Table(title="incidents")
    for col in ("id", "created", "status", "source", "rule", "action", "target", "certs", "guard"):
        table.add_column(col)
    for i in items:
        table.add_row(str(i.id), i.created_at.isoformat()[:19], i.status, i.source, i.rule, i.action,
                      f"{i.target_kind}:{i.target_value}", str(len(i.serials)), i.guard or "-")
    console.print(table)


@app.command()
@cli_errors
def show(incident_id: int, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
         json_out: JsonOption = False) -> None:
    """One incident with its plan, its alert and its decision."""
    from ca.errors import ErrorKind, PKIError

    inc = _service(directory, config).store.get(incident_id)
    if inc is None:
        raise PKIError(ErrorKind.NOT_FOUND, f"no incident {incident_id}")
    if json_out:
        print_json(inc.wire())
        return
    for key, value in inc.wire().items():
        console.print(f"[bold]{key}[/bold]: {value}", highlight=False)


def _decide(incident_id: int, approve: bool, note: str | None, directory: Any, config: Any, json_out: bool) -> None:
    inc = _service(directory, config).engine.decide(incident_id, approve, _actor(), "cli", "", note)
    if json_out:
        print_json(inc.wire())
    else:
        console.print(f"incident {inc.id}: {inc.status} ({len(inc.changed)} certificate(s) changed)",
                      highlight=False)


@app.command()
@cli_errors
def approve(incident_id: int, note: Annotated[str | None, typer.Option("--note")] = None,
            directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Execute a pending incident's plan now."""
    _decide(incident_id, True, note, directory, config, json_out)


@app.command()
@cli_errors
def reject(incident_id: int, note: Annotated[str | None, typer.Option("--note")] = None,
           directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Close a pending incident without changing anything."""
    _decide(incident_id, False, note, directory, config, json_out)
