"""``ikepki revoke`` / ``ikepki unhold``: dry run by default, ``--yes`` executes."""

from __future__ import annotations

from typing import Annotated

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
    open_deployment,
    print_json,
)
from ca.errors import ErrorKind, PKIError


def register(app: typer.Typer) -> None:
    app.command()(revoke)
    app.command()(unhold)


@cli_errors
def revoke(serials: Annotated[list[str], typer.Argument(help="Serial numbers (hex).")],
           reason: Annotated[str, typer.Option("--reason", help="RFC 5280 reason, e.g. keyCompromise.")],
           yes: Annotated[bool, typer.Option("--yes", help="Execute (default: dry run).")] = False,
           hold: Annotated[bool, typer.Option("--hold", help="Suspend (certificateHold) instead.")] = False,
           block_device: Annotated[bool, typer.Option("--block-device", help="Also refuse re-enrollment.")] = False,
           directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Revoke certificates. Without --yes, shows what would be revoked and changes nothing."""
    from ca.cli.main import _cert_json, _whoami, parse_serial
    from ca.model import Requester, RevocationReason, RevocationRequest

    try:
        why = RevocationReason.certificateHold if hold else RevocationReason.parse(reason)
    except ValueError as exc:
        raise PKIError(ErrorKind.BAD_REQUEST, str(exc)) from None
    wanted = [parse_serial(s) for s in serials]
    dep = open_deployment(directory, config)
    found = [dep.store.get(s) for s in wanted]
    missing = [format(s, "x") for s, f in zip(wanted, found, strict=True) if f is None]
    if missing:
        raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial {', '.join(missing)}")
    targets = [f for f in found if f is not None]
    if not yes:
        if json_out:
            print_json({"dry_run": True, "reason": why.name, "would_revoke": [_cert_json(t) for t in targets]})
        else:
            table = Table(title=f"would revoke ({why.name}); nothing changed — add --yes to execute")
            for col in ("serial", "identity", "device", "profile", "status", "expires"):
                table.add_column(col)
            for t in targets:
                table.add_row(t.serial_hex, ", ".join(t.sans) or t.subject, t.device_id or "-", t.profile,
                              t.status.value, f"{t.not_after:%Y-%m-%d %H:%M}Z")
            console.print(table)
        raise typer.Exit(EXIT_DRY_RUN)
    done = dep.authority.revoke(RevocationRequest(tuple(wanted), why, Requester("cli", _whoami()),
                                                  block_devices=block_device))
    if json_out:
        print_json({"dry_run": False, "reason": why.name, "revoked": [_cert_json(d) for d in done],
                    "unchanged": [format(s, "x") for s in wanted if s not in {d.serial for d in done}]})
    else:
        console.print(f"revoked {len(done)} of {len(wanted)} ({why.name})")


@cli_errors
def unhold(serial: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
           json_out: JsonOption = False) -> None:
    """Release a certificateHold: the certificate is valid again."""
    from ca.cli.main import _cert_json, _whoami, parse_serial
    from ca.model import Requester

    dep = open_deployment(directory, config)
    info = dep.authority.release_hold(parse_serial(serial), Requester("cli", _whoami()))
    if json_out:
        print_json(_cert_json(info))
    else:
        console.print(f"released hold on {info.serial_hex}: valid again")
