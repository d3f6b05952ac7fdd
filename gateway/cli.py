"""``ikepki responder``: run the bundled IKEv2 responder and inspect its SAs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from gateway.revocation import OcspMode
from gateway.server import ConfigError, ServeOptions, run

app = typer.Typer(help="Bundled IKEv2 responder (relying party).", no_args_is_help=True)

DEFAULT_CONTROL = Path(os.environ.get("IKEPKI_RESPONDER_CONTROL", "/run/ikepki-responder.sock"))


def _merge(config: Path | None, cli: dict[str, Any]) -> dict[str, Any]:
    """Values from ``--config`` YAML (keys = long option names with '_'), overridden by the CLI."""
    base: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text()) or {}
        base = {k.replace("-", "_"): v for k, v in loaded.items()}
    base.update({k: v for k, v in cli.items() if v is not None})
    return base


@app.command()
def serve(
    listen: Annotated[str | None, typer.Option(help="UDP ADDR:PORT for IKE")] = None,
    nat_port: Annotated[int | None, typer.Option(help="second UDP port (NAT-T, e.g. 4500)")] = None,
    cert: Annotated[Path | None, typer.Option(help="PEM cert, then its chain")] = None,
    key: Annotated[str | None, typer.Option(help="PEM private key file or RFC 7512 PKCS#11 URI")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(help="PEM roots for peers + push")] = None,
    policy: Annotated[Path | None, typer.Option(help="YAML authorization policy")] = None,
    push_listen: Annotated[str | None, typer.Option(help="HTTPS ADDR:PORT for POST /v1/revocations")] = None,
    push_tls_cert: Annotated[Path | None, typer.Option(help="PEM cert (+chain) of the push listener (HTTPS; "
                                                       "required with --push-listen)")] = None,
    push_tls_key: Annotated[Path | None, typer.Option(help="PEM key for --push-tls-cert")] = None,
    push_insecure_http: Annotated[bool, typer.Option(
        "--push-insecure-http", help="serve --push-listen as plain HTTP instead of HTTPS (events stay signed, but "
                                     "are readable on the path); logs a warning")] = False,
    push_max_connections: Annotated[int | None, typer.Option(help="open push connections (default 64)")] = None,
    push_timeout: Annotated[float | None, typer.Option(help="seconds for a push TLS handshake / request")] = None,
    control: Annotated[Path | None, typer.Option(help="Unix control socket path")] = None,
    ocsp: Annotated[OcspMode | None, typer.Option(help="OCSP checking mode")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file with any of these options")] = None,
    event_log: Annotated[Path | None, typer.Option(help="JSON-lines event log (default stderr)")] = None,
    local_id: Annotated[str | None, typer.Option(help="our IKE identity (default: first SAN)")] = None,
    dh_groups: Annotated[str | None, typer.Option(help="preferred DH groups, e.g. 19,31,20,21")] = None,
    cookie_threshold: Annotated[int | None, typer.Option(help="half-open SAs before COOKIEs")] = None,
    half_open_timeout: Annotated[float | None, typer.Option(help="seconds a half-open SA lives")] = None,
    fragment_size: Annotated[int | None, typer.Option(help="RFC 7383: fragment SK messages above this")] = None,
    radius: Annotated[Path | None, typer.Option(help="YAML: EAP via RADIUS servers, accounting, DAE")] = None,
) -> None:
    """Serve IKEv2 as responder (RFC 7296)."""
    opts = _merge(config, {
        "listen": listen, "nat_port": nat_port, "cert": cert, "key": key, "ca_bundle": ca_bundle,
        "policy": policy, "push_listen": push_listen, "push_tls_cert": push_tls_cert,
        "push_tls_key": push_tls_key, "push_insecure_http": push_insecure_http or None,
        "push_max_connections": push_max_connections, "push_timeout": push_timeout, "control": control,
        "ocsp": ocsp,
        "event_log": event_log, "local_id": local_id, "dh_groups": dh_groups,
        "cookie_threshold": cookie_threshold, "half_open_timeout": half_open_timeout,
        "fragment_size": fragment_size, "radius": radius})
    missing = [k for k in ("listen", "cert", "key", "ca_bundle") if not opts.get(k)]
    if missing:
        raise typer.BadParameter(f"missing: {', '.join('--' + m.replace('_', '-') for m in missing)}")
    opts["key"] = str(opts["key"])
    for k in ("cert", "ca_bundle", "policy", "control", "event_log", "push_tls_cert", "push_tls_key", "radius"):
        if opts.get(k) is not None:
            opts[k] = Path(opts[k])
    if isinstance(opts.get("dh_groups"), str):
        opts["dh_groups"] = tuple(int(g) for g in opts["dh_groups"].split(","))
    opts["ocsp"] = OcspMode(opts.get("ocsp", OcspMode.RELAXED))
    opts.setdefault("control", DEFAULT_CONTROL)
    try:
        asyncio.run(run(ServeOptions(**opts)))
    except (ConfigError, OSError, ValueError, yaml.YAMLError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _http_get(path: str, url: str | None, control: Path, ca_bundle: Path | None = None) -> dict[str, Any]:
    if url:
        import ssl

        import httpx

        verify = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
        return dict(httpx.get(url.rstrip("/") + path, timeout=5, verify=verify).json())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(control))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: local\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return dict(json.loads(data.partition(b"\r\n\r\n")[2]))


@app.command()
def sas(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    url: Annotated[str | None, typer.Option(help="push listener URL, https://h:p")] = None,
    control: Annotated[Path, typer.Option(help="Unix control socket")] = DEFAULT_CONTROL,
    ca_bundle: Annotated[Path | None, typer.Option(help="PEM roots for the push listener's TLS certificate "
                                                        "(default: the system roots)")] = None,
) -> None:
    """List the responder's IKE SAs."""
    data = _http_get("/v1/sas", url, control, ca_bundle)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for sa in data["sas"]:
        typer.echo(f"{sa['ike_sa']} {sa['state']} {sa['peer']} id={sa['peer_id']} serial={sa['serial']} "
                   f"{sa['suite']}")
        for ch in sa["children"]:
            typer.echo(f"  child {ch['spi_in']}/{ch['spi_out']} {ch['encr']} "
                       f"{','.join(ch['local_ts'])} === {','.join(ch['remote_ts'])}")


if __name__ == "__main__":
    app()
