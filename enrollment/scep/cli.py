"""``ikepki scep …``: one-time challenge passwords and manual approval of pending requests."""

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
    open_deployment,
    print_json,
)
from ca.cli.render import Column, render
from ca.errors import ErrorKind, PKIError

app = typer.Typer(no_args_is_help=True, help="SCEP (RFC 8894): challenge passwords and pending requests.")
challenge_app = typer.Typer(no_args_is_help=True, help="One-time challenge passwords.")
app.add_typer(challenge_app, name="challenge")


def _service(directory: object, config: object) -> object:
    from enrollment.scep.service import ScepService

    return ScepService(open_deployment(directory, config))  # type: ignore[arg-type]


@challenge_app.command("create")
@cli_errors
def challenge_create(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
                     profile: Annotated[str | None, typer.Option(help="Certificate profile (default: scep "
                                                                       "default_profile).")] = None,
                     ttl_minutes: Annotated[int | None, typer.Option(min=1, help="Validity in minutes.")] = None,
                     json_out: JsonOption = False) -> None:
    """Create a one-time challenge password (printed once; only its hash is stored)."""
    from datetime import timedelta

    service = _service(directory, config)
    name = profile or service.settings.default_profile  # type: ignore[attr-defined]
    ttl = timedelta(minutes=ttl_minutes) if ttl_minutes else None
    ch = service.create_challenge(name, cli_principal(), ttl)  # type: ignore[attr-defined]
    if json_out:
        print_json({"id": ch.id, "challenge": ch.secret, "profile": ch.profile, "expires_at": ch.expires_at})
    else:
        console.print(ch.secret, highlight=False)


@app.command("pending")
@cli_errors
def pending(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Requests waiting for manual approval."""
    service = _service(directory, config)
    rows = service.repo.pending()  # type: ignore[attr-defined]
    if json_out:
        print_json([_row(t) for t in rows])
        return
    render(console, (Column("id", key=True), Column("transaction", key=True), Column("profile"),
                     Column("subject", key=True), Column("source"), Column("received")),
           [[str(t.id), t.transaction_id, t.profile, t.subject, t.source, t.created_at.isoformat()] for t in rows],
           "pending SCEP requests")


def _row(t: object) -> dict[str, object]:
    return {"id": t.id, "transaction_id": t.transaction_id, "profile": t.profile,  # type: ignore[attr-defined]
            "status": t.status, "subject": t.subject, "source": t.source,  # type: ignore[attr-defined]
            "serial": format(t.serial, "x") if t.serial is not None else None,  # type: ignore[attr-defined]
            "created_at": t.created_at}  # type: ignore[attr-defined]


def _resolve(service: object, ident: str) -> int:
    if ident.isdigit():
        return int(ident)
    rows = service.repo.get(ident)  # type: ignore[attr-defined]
    if not rows:
        raise PKIError(ErrorKind.NOT_FOUND, f"no SCEP transaction {ident!r}")
    if len(rows) > 1:
        raise PKIError(ErrorKind.CONFLICT, f"transaction {ident!r} is ambiguous; use the numeric id")
    return int(rows[0].id)


@app.command("approve")
@cli_errors
def approve(ident: Annotated[str, typer.Argument(help="Numeric id or transactionID (see `ikepki scep pending`).")],
            directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Issue the certificate for a pending request; the client gets it on its next CertPoll."""
    service = _service(directory, config)
    tx = service.approve(_resolve(service, ident), cli_principal())  # type: ignore[attr-defined]
    if json_out:
        print_json(_row(tx))
    else:
        console.print(f"approved {tx.transaction_id}: issued serial {format(tx.serial, 'x')}", soft_wrap=True)


@app.command("reject")
@cli_errors
def reject(ident: Annotated[str, typer.Argument(help="Numeric id or transactionID.")],
           directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Reject a pending request; the client gets FAILURE/badRequest on its next CertPoll."""
    service = _service(directory, config)
    tx = service.reject(_resolve(service, ident), cli_principal())  # type: ignore[attr-defined]
    if json_out:
        print_json(_row(tx))
    else:
        console.print(f"rejected {tx.transaction_id}")
