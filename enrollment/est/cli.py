"""``ikepki est …``: MDM device registrations, manual approval, pipeline password hashes."""

from __future__ import annotations

from typing import Annotated

import typer

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
from ca.cli.render import Column, render

app = typer.Typer(no_args_is_help=True, help="EST server (RFC 7030): MDM registrations and approvals.")


def _service(directory: object, config: object) -> object:
    from ca.cli.common import open_deployment
    from enrollment.est.service import EstService
    from enrollment.est.settings import EstSettings

    dep = open_deployment(directory, config)  # type: ignore[arg-type]
    return EstService(dep, dep.settings_for(EstSettings, "est"))


@app.command()
@cli_errors
def register(device: Annotated[str, typer.Option("--device", help="Device id (the EST Basic user name).")],
             profile: Annotated[str, typer.Option("--profile", help="machine, user or gateway.")],
             san: Annotated[list[str], typer.Option("--san", help="SAN[,SAN…]: DNS:name, IP:addr, email:addr.")],
             ek_fingerprint: Annotated[str | None, typer.Option("--ek-fingerprint")] = None,
             expires: Annotated[float | None, typer.Option("--expires", help="Hours until the secret expires.")]
             = None,
             directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Pre-authorise a device; prints its one-time enrollment secret (shown only now)."""
    from enrollment.est.admin import register_devices
    from enrollment.est.registrations import DeviceRegistration

    sans = tuple(s.strip() for value in san for s in value.split(",") if s.strip())
    service = _service(directory, config)
    (issued,) = register_devices(service, [DeviceRegistration(device, profile, sans, ek_fingerprint, expires)],  # type: ignore[arg-type]
                                 cli_principal())
    if json_out:
        print_json({"device_id": issued.device_id, "secret": issued.secret,
                    "expires_at": issued.expires_at.isoformat()})
    else:
        typer.echo(issued.secret)


@app.command("show")
@cli_errors
def show(device: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
         json_out: JsonOption = False) -> None:
    """Show a device registration (never its secret)."""
    from ca.errors import ErrorKind, PKIError
    from enrollment.est.admin import registration_response

    found = _service(directory, config).registrations.get(device)  # type: ignore[attr-defined]
    if found is None:
        raise PKIError(ErrorKind.NOT_FOUND, f"no registration for device {device!r}")
    data = registration_response(found).model_dump(mode="json")
    if json_out:
        print_json(data)
    else:
        for key, value in data.items():
            console.print(f"[bold]{key}[/bold]: {value}", highlight=False)


@app.command("pending")
@cli_errors
def pending(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Enrollments waiting for manual approval."""
    from enrollment.est.admin import pending_response

    rows = [pending_response(p).model_dump(mode="json")
            for p in _service(directory, config).registrations.list_pending()]  # type: ignore[attr-defined]
    if json_out:
        print_json(rows)
        return
    render(console, (Column("id", key=True), Column("label"), Column("principal"), Column("identities", key=True),
                     Column("created")),
           [[r["id"], r["label"], r["principal"], ", ".join(r["sans"]) or r["subject"], r["created_at"]]
            for r in rows])


def _decide(pending_id: str, approve: bool, directory: object, config: object, json_out: bool) -> None:
    from enrollment.est.admin import decide_pending, pending_response

    service = _service(directory, config)
    result = decide_pending(service, pending_id, approve, cli_principal(), "cli")  # type: ignore[arg-type]
    if json_out:
        print_json(pending_response(result).model_dump(mode="json"))
    else:
        console.print(f"enrollment {pending_id} {result.status}; the client gets its certificate on its next retry"
                      if approve else f"enrollment {pending_id} rejected", highlight=False)


@app.command()
@cli_errors
def approve(pending_id: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
            json_out: JsonOption = False) -> None:
    """Approve a held enrollment (the client receives the certificate when it retries)."""
    _decide(pending_id, True, directory, config, json_out)


@app.command()
@cli_errors
def reject(pending_id: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
           json_out: JsonOption = False) -> None:
    """Reject a held enrollment (the client's next retry gets 403)."""
    _decide(pending_id, False, directory, config, json_out)


@app.command("hash-password")
@cli_errors
def hash_password_cmd(password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                                            help="Pipeline password (prompted if omitted).")],
                      json_out: JsonOption = False) -> None:
    """Hash a pipeline password for est.pipelines.<name>.password_hash (PBKDF2-SHA256)."""
    from enrollment.est.auth import hash_password

    encoded = hash_password(password)
    if json_out:
        print_json({"password_hash": encoded})
    else:
        typer.echo(encoded)
