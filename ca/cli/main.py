"""``ikepki``: init, serve, issue, certs, revoke, audit, db; protocol packages add their
sub-commands through the ``ikepki.commands`` entry point group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib.metadata import entry_points
from pathlib import Path
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
    fail,
    open_deployment,
    print_json,
    setup_logging,
)
from ca.cli.render import Column, render
from ca.cli.revoke import register as register_revoke
from ca.errors import ErrorKind, PKIError
from ca.model import Requester, parse_serial

app = typer.Typer(name="ikepki", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="ikepki: internal PKI for IKEv2 identities (HSM-backed CA, ACME/EST/SCEP, OCSP/CRL).")
certs_app = typer.Typer(no_args_is_help=True, help="Inspect issued certificates.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic).")
admin_app = typer.Typer(no_args_is_help=True, help="Admin API credentials.")
app.add_typer(certs_app, name="certs")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
log = logging.getLogger("ikepki.cli")


@app.command()
@cli_errors
def init(directory: DirOption = DEFAULT_DIR,
         ceremony: Annotated[Path | None, typer.Option(help="Ceremony file (default: the sample).")] = None,
         force: Annotated[bool, typer.Option("--force", help="Replace an existing CA in DIR.")] = False,
         if_missing: Annotated[bool, typer.Option(
             "--if-missing", help="Succeed without changes when DIR already holds a deployment (several "
                                  "replicas may run init at once: one makes it, the others wait and find it).")]
         = False,
         json_out: JsonOption = False) -> None:
    """Create a complete deployment in DIR: SoftHSM token, CA hierarchy, TLS cert, store, admin credential."""
    from ca.deployment import init_deployment

    result = init_deployment(directory, ceremony, force, if_missing=if_missing, actor=cli_principal())
    if json_out:
        print_json({"dir": str(result.dir), "existing": result.existing,
                    "made": [{"what": w, "where": x} for w, x in result.made]})
        return
    if result.existing:
        console.print(f"{result.dir} already holds an ikepki deployment: nothing to do", highlight=False)
        return
    render(console, (Column("made"), Column("details", key=True)), [[w, x] for w, x in result.made],
           f"ikepki deployment in {result.dir}")
    console.print(f"Next: ikepki serve --dir {directory}")


@app.command()
@cli_errors
def serve(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(help="Listen address (default from config: 127.0.0.1).")] = None,
          https_port: Annotated[int | None, typer.Option(help="HTTPS port (default 8443).")] = None,
          http_port: Annotated[int | None, typer.Option(help="Plain HTTP port (default 8080).")] = None,
          no_workers: Annotated[bool, typer.Option("--no-workers", help="Do not run background workers "
                                                   "(CRL publisher, push) in this process.")] = False,
          workers: Annotated[int | None, typer.Option("--workers", min=1, max=64, help="Serving processes "
                                                      "(default from config `workers`: one per CPU core).")]
          = None) -> None:
    """Serve ACME, EST, SCEP and admin over HTTPS and OCSP, CRL, SCEP over HTTP."""
    from ca.service.mounts import HTTP, HTTPS
    from ca.service.server import BACKLOG, load_background_tasks, run_servers
    from ca.service.supervisor import default_workers, open_for_service, serve_workers

    setup_logging()
    dep = open_for_service(directory, config, "serve")  # the HSM and the store now: fail before listening
    s = dep.settings
    h, tls_port, plain_port = host or s.host, https_port or s.https_port, http_port or s.http_port
    n = default_workers(workers or s.workers)

    def ready() -> None:
        console.print(f"ikepki serving https://{h}:{tls_port} (ACME /acme/directory, EST /.well-known/est, "
                      f"admin /admin/v1) and http://{h}:{plain_port} (OCSP /ocsp, CRL /crl, SCEP /scep)"
                      + (f" with {n} workers" if n > 1 else ""), highlight=False, soft_wrap=True)

    if n > 1:
        raise typer.Exit(serve_workers({"directory": dep.dir, "config": config, "host": h, "plugins": None,
                                        "background": not no_workers, "workers": n, "setup": setup_logging},
                                       {HTTPS: tls_port, HTTP: plain_port}, BACKLOG, ready))
    tasks = [] if no_workers else load_background_tasks(dep)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_servers(dep, h, tls_port, plain_port, tasks=tasks, ready=ready))


@app.command()
@cli_errors
def issue(csr: Annotated[Path, typer.Option("--csr", help="PKCS#10 request (PEM or DER).")],
          profile: Annotated[str, typer.Option("--profile", help="machine, user, gateway or radius.")],
          out: Annotated[Path | None, typer.Option("--out", help="Write leaf + chain (PEM) here.")] = None,
          lifetime_hours: Annotated[float | None, typer.Option("--lifetime-hours")] = None,
          subject: Annotated[str | None, typer.Option(
              "--subject", help="Subject attributes the operator grants (RFC 4514, e.g. 'CN=mdm-ra,O=Example'); "
                                "other CSR subject attributes are kept only where the profile allows them.")] = None,
          directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Issue a certificate locally (bootstrap and ceremonies); output is the leaf then its chain."""
    from datetime import timedelta

    from cryptography import x509

    from ca.csr import parse_csr
    from ca.errors import ErrorKind, PKIError
    from ca.model import IssuanceRequest
    from ca.profiles import SUBJECT_ATTRIBUTES

    data = csr.read_bytes()
    grants: tuple[x509.NameAttribute, ...] = ()
    if subject:
        try:
            grants = tuple(x509.Name.from_rfc4514_string(subject, {"serialNumber": SUBJECT_ATTRIBUTES["serialNumber"]}))
        except ValueError:
            raise PKIError(ErrorKind.CONFIG, f"--subject: not an RFC 4514 name: {subject[:80]!r}") from None
    dep = open_deployment(directory, config)
    req = IssuanceRequest(parse_csr(data), profile, Requester("cli", cli_principal()),
                          timedelta(hours=lifetime_hours) if lifetime_hours else None, subject_grants=grants)
    issued = dep.authority.issue(req)
    pem = issued.pem_chain()
    if out:
        out.write_bytes(pem)
    if json_out:
        print_json({"serial": issued.info.serial_hex, "profile": profile, "not_after": issued.info.not_after,
                    "sans": issued.info.sans, "pem": pem.decode(), "out": str(out) if out else None})
    elif out:
        until = issued.info.not_after.strftime("%Y-%m-%d %H:%MZ")
        console.print(f"issued serial {issued.info.serial_hex} ({profile}, until {until}) -> {out}", highlight=False)
    else:
        typer.echo(pem.decode(), nl=False)


@certs_app.command("list")
@cli_errors
def certs_list(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
               profile: Annotated[str | None, typer.Option()] = None,
               status: Annotated[str | None, typer.Option(help="valid, revoked or hold")] = None,
               san: Annotated[str | None, typer.Option(help="e.g. DNS:h1.example.test")] = None,
               device: Annotated[str | None, typer.Option()] = None,
               user: Annotated[str | None, typer.Option(help="identity-provider user: <iss>#<sub>, sub or email")]
               = None,
               limit: Annotated[int, typer.Option()] = 100, json_out: JsonOption = False) -> None:
    """List certificates, newest first."""
    from ca.model import CertificateQuery, CertStatus

    try:
        st = CertStatus(status) if status else None
    except ValueError:
        raise PKIError(ErrorKind.BAD_REQUEST, f"unknown status {status!r} (valid, revoked, hold)") from None
    dep = open_deployment(directory, config)
    rows = dep.store.search(CertificateQuery(profile=profile, status=st, san=san, device_id=device, user=user,
                                             limit=limit))
    if json_out:
        users = dep.store.users([r.serial for r in rows]) if user else {}
        print_json([{**_cert_json(r), **({"user": _user_json(users[r.serial])} if r.serial in users else {})}
                    for r in rows])
        return
    render(console, (Column("serial", key=True), Column("profile"), Column("status"),
                     Column("identities", key=True), Column("not after"), Column("channel")),
           [[r.serial_hex, r.profile, r.status.value, ", ".join(r.sans) or r.subject,
             f"{r.not_after:%Y-%m-%d %H:%M}Z", r.channel] for r in rows])


@certs_app.command("show")
@cli_errors
def certs_show(serial: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
               pem: Annotated[bool, typer.Option("--pem", help="Print the certificate PEM.")] = False,
               json_out: JsonOption = False) -> None:
    """Show one certificate by serial (hex)."""
    dep = open_deployment(directory, config)
    info = dep.store.get(parse_serial(serial))
    if info is None:
        raise PKIError(ErrorKind.NOT_FOUND, f"no certificate with serial {serial}")
    if pem:
        from cryptography.hazmat.primitives.serialization import Encoding

        typer.echo(info.certificate().public_bytes(Encoding.PEM).decode(), nl=False)
    elif json_out:
        print_json(_cert_json(info))
    else:
        for key, value in _cert_json(info).items():
            console.print(f"[bold]{key}[/bold]: {value}", highlight=False)


def _user_json(u: object) -> dict[str, object]:
    from dataclasses import asdict

    return {**asdict(u), "uri": getattr(u, "uri", None)}  # type: ignore[call-overload]


def _cert_json(info: object) -> dict[str, object]:
    from ca.model import CertificateInfo

    assert isinstance(info, CertificateInfo)
    return {"serial": info.serial_hex, "issuer": info.issuer_id, "subject": info.subject, "sans": list(info.sans),
            "profile": info.profile, "status": info.status.value, "not_before": info.not_before.isoformat(),
            "not_after": info.not_after.isoformat(),
            "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
            "reason": info.revocation_reason.name if info.revocation_reason else None,
            "device_id": info.device_id, "ek_fingerprint": info.ek_fingerprint, "channel": info.channel,
            "requester": info.requester}


@audit_app.command("verify")
@cli_errors
def audit_verify(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
                 file: Annotated[Path | None, typer.Option("--file", help="Audit log (default DIR/audit.log).")] = None,
                 json_out: JsonOption = False) -> None:
    """Check the audit log's hash chain; names the first bad line."""
    from ca.audit import verify

    path = file or open_deployment(directory, config).path("audit.log")
    result = verify(path)
    if json_out:
        print_json({"ok": result.ok, "lines": result.lines, "bad_line": result.bad_line, "problem": result.problem})
    elif result.ok:
        console.print(f"audit log OK: {result.lines} lines, hash chain intact")
    if not result.ok:
        raise fail(f"{path}: line {result.bad_line}: {result.problem}", 1)


@db_app.command("upgrade")
@cli_errors
def db_upgrade(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None) -> None:
    """Apply all Alembic migrations (every package's branch) to the configured database."""
    from ca.deployment import Deployment
    from ca.store import migrate

    dep = Deployment.open(directory, config, require_ca=False)
    migrate.upgrade(dep.database_url)
    console.print("database schema up to date")


@admin_app.command("token")
@cli_errors
def admin_token(name: Annotated[str, typer.Option("--name")],
                role: Annotated[str, typer.Option("--role", help="viewer, revoker or admin")],
                directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Create an admin API token; it is printed once and stored only as a hash."""
    import secrets

    dep = open_deployment(directory, config)
    token = secrets.token_urlsafe(32)
    now, actor = dep.clock.now(), cli_principal()
    dep.store.add_admin_token(  # audit row and file line inside the transaction (never the token value)
        name, role, token, now, Requester("cli", actor),
        before_commit=lambda: dep.audit.append(now, actor, "admin-token-create", "cli", token=name, role=role))
    if json_out:
        print_json({"name": name, "role": role, "token": token})
    else:
        typer.echo(token)


@app.command()
@cli_errors
def worker(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
           host: Annotated[str | None, typer.Option(help="Health listener address.")] = None,
           port: Annotated[int, typer.Option(help="Health/metrics port (0: none).")] = 0) -> None:
    """Run the background workers (CRL publisher, revocation push) without the API listeners."""
    from ca.service.server import load_background_tasks, run_servers

    setup_logging()
    dep = open_deployment(directory, config)
    tasks = load_background_tasks(dep)
    console.print(f"ikepki worker: {', '.join(t.name for t in tasks) or 'no tasks installed'}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_servers(dep, host or dep.settings.host, None, port or None, mounts=[], tasks=tasks))


register_revoke(app)


def _builtin_commands() -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    return {n.replace("_", "-") for n in names} | {g.name for g in app.registered_groups if g.name}


def _load_plugins(wanted: str | None = None) -> None:
    """Add the protocol packages' sub-commands; only the one named on the command line when it
    is a plug-in, none for a built-in command (their imports cost seconds of start-up)."""
    if wanted is not None and wanted in _builtin_commands():
        return
    eps = sorted(entry_points(group="ikepki.commands"), key=lambda e: e.name)
    if wanted is not None and wanted in {ep.name for ep in eps}:
        eps = [ep for ep in eps if ep.name == wanted]
    for ep in eps:
        try:
            sub = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and ep.value.split(":")[0].startswith(exc.name):
                continue  # that protocol package is not installed/present
            raise
        app.add_typer(sub, name=ep.name)


def main() -> None:
    import sys

    _load_plugins(next((a for a in sys.argv[1:] if not a.startswith("-")), None))
    app()


if __name__ == "__main__":
    main()
