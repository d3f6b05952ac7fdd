"""``ikepki ocsp serve`` (the OCSP + CRL mounts alone, to scale as their own deployment reading
the store) and ``ikepki crl publish`` (write the current CRLs for static hosting)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from ca.cli.common import (
    DEFAULT_DIR,
    ConfigOption,
    DirOption,
    JsonOption,
    cli_errors,
    console,
    open_deployment,
    print_json,
    setup_logging,
)
from ca.cli.render import Column, render
from ca.errors import ErrorKind, PKIError

ocsp_app = typer.Typer(no_args_is_help=True, help="OCSP responder (RFC 6960 / RFC 5019) and CRL distribution.")
crl_app = typer.Typer(no_args_is_help=True, help="Certificate revocation lists (RFC 5280 §5).")


@ocsp_app.command("serve")
@cli_errors
def serve(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(help="Listen address (default from config).")] = None,
          port: Annotated[int | None, typer.Option(help="Plain HTTP port (default: http_port, 8080).")] = None,
          no_workers: Annotated[bool, typer.Option("--no-workers", help="Do not run the CRL publisher and "
                                                   "signer rotation here.")] = False,
          workers: Annotated[int | None, typer.Option("--workers", min=1, max=64, help="Serving processes "
                                                      "(default from config `workers`: one per CPU core).")]
          = None) -> None:
    """Serve /ocsp and /crl (plus /healthz, /readyz, /metrics, /ca) over plain HTTP."""
    from ca.service.mounts import HTTP
    from ca.service.server import BACKLOG, run_servers
    from ca.service.supervisor import default_workers, serve_workers
    from ocsp.http import http_mounts
    from ocsp.worker import background_tasks

    setup_logging()
    dep = open_deployment(directory, config)
    h, p = host or dep.settings.host, port or dep.settings.http_port
    n = default_workers(workers or dep.settings.workers)

    def ready() -> None:
        console.print(f"ikepki OCSP/CRL serving http://{h}:{p} (OCSP /ocsp, CRL /crl)"
                      + (f" with {n} workers" if n > 1 else ""), highlight=False)

    if n > 1:
        raise typer.Exit(serve_workers({"directory": dep.dir, "config": config, "host": h,
                                        "plugins": frozenset({"ocsp"}), "background": not no_workers,
                                        "workers": n, "open_authority": False, "setup": setup_logging},
                                       {HTTP: p}, BACKLOG, ready))
    mounts = http_mounts(dep)
    tasks = [] if no_workers else background_tasks(dep)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_servers(dep, h, None, p, mounts=mounts, tasks=tasks, ready=ready))


@crl_app.command("publish")
@cli_errors
def publish(out: Annotated[Path, typer.Option("--out", help="Write the CRLs into this directory.")],
            directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
            force: Annotated[bool, typer.Option("--force", help="Issue new CRLs now even if not due.")] = False,
            json_out: JsonOption = False) -> None:
    """Publish what is due (under the publisher lease), then write every issuer's current CRLs
    (<issuer>.crl, <issuer>-delta.crl, DER, and .pem) into --out for static hosting."""
    from ocsp.runtime import runtime_for

    dep = open_deployment(directory, config)
    rt = runtime_for(dep)
    published = rt.publish(force)
    if published is None:
        console.print("another replica holds the publisher lease: writing its newest CRLs", highlight=False) \
            if not json_out else None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for issuer_id in sorted(rt.crl_issuer_ids):
        for kind in ("full", "delta"):
            served = rt.crls.refresh(issuer_id, kind)
            if served is None:
                continue
            stem = issuer_id if kind == "full" else f"{issuer_id}-delta"
            (out / f"{stem}.crl").write_bytes(served.der)
            (out / f"{stem}.pem").write_bytes(served.pem)
            written.append({"issuer": issuer_id, "kind": kind, "number": served.number,
                            "file": str(out / f"{stem}.crl")})
    if not written:
        raise PKIError(ErrorKind.UNAVAILABLE, "no CRL has been published yet (another replica holds the lease)")
    if json_out:
        print_json({"published": published or [], "written": written})
        return
    for line in published or []:
        console.print(f"published {line}", highlight=False)
    for w in written:
        console.print(f"{w['file']}: {w['issuer']} {w['kind']} CRL #{w['number']}", highlight=False)


@crl_app.command("list")
@cli_errors
def list_crls(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """The newest published full and delta CRL of every issuer (number, entries, validity)."""

    from ocsp.crl_publisher import latest
    from ocsp.runtime import runtime_for

    dep = open_deployment(directory, config)
    rows = []
    with dep.db.read() as conn:
        for issuer_id in sorted(runtime_for(dep).crl_issuer_ids):
            for kind in ("full", "delta"):
                p = latest(conn, issuer_id, kind)
                if p is not None:
                    rows.append({"issuer": issuer_id, "kind": kind, "number": p.crl_number, "base": p.base_number,
                                 "entries": p.entries, "this_update": p.this_update.isoformat(),
                                 "next_update": p.next_update.isoformat()})
    if json_out:
        print_json(rows)
        return
    keys = ("issuer", "kind", "number", "base", "entries", "this_update", "next_update")
    render(console, [Column(k.replace("_", " "), key=k in ("issuer", "number")) for k in keys],
           [[str(r[k]) if r[k] is not None else "" for k in keys] for r in rows])
