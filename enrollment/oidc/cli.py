"""``ikepki user …``: a person gets a short-lived VPN certificate by signing in to the identity
provider on any browser (RFC 8628 device grant), without a browser on this device.

``ikepki user enroll --server URL --idp NAME --out DIR`` writes ``DIR/key.pem`` (0600, or
``--key-out``; with ``--tpm TCTI`` the key is created in the TPM at a persistent handle instead),
``DIR/cert.pem``, ``DIR/chain.pem`` and ``DIR/enrollment.json`` (server, provider,
serial; no secrets). ``ikepki user renew --out DIR`` signs in again when the certificate is within
``--before`` hours of expiry (the provider decides whether its session still lets the user in
without a password) and replaces key and certificate.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from ca.cli.common import cli_errors, err_console, print_json

app = typer.Typer(no_args_is_help=True, help="User certificates from the identity provider (OIDC device sign-in).")

ServerOpt = Annotated[str, typer.Option("--server", envvar="IKEPKI_SERVER", help="ikepki HTTPS URL.")]
BundleOpt = Annotated[Path | None, typer.Option("--ca-bundle", help="CA bundle for the server's TLS certificate.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Directory for cert.pem, chain.pem (and key.pem).")]


def _write_private(path: Path, data: bytes) -> None:
    """Create/replace with mode 0600 from the start (never briefly world-readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


USER_KEY_HANDLE = 0x81000010  # persistent handle of the user key in the TPM (--tpm)


def _tpm_csr(tcti: str, handle: int) -> tuple[Any, bytes]:
    """A fresh non-exportable P-256 key in the TPM (replacing the one at ``handle``) and its CSR."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    from enrollment.attestation.device import TpmDevice

    with TpmDevice(tcti) as tpm:
        tpm.create_device_key(handle)
        csr = tpm.build_csr(subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ikepki user")]),
                            handle=handle)
    return None, csr.public_bytes(serialization.Encoding.PEM)


def _enroll(server: str, idp: str, out: Path, key_out: Path | None, ca_bundle: Path | None,
            device: str | None, json_out: bool, tpm: str | None = None,
            tpm_handle: int = USER_KEY_HANDLE) -> dict[str, Any]:
    import ssl

    import httpx
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from ca.errors import ErrorKind, PKIError
    from enrollment.oidc import device_grant

    verify: Any = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
    with httpx.Client(verify=verify, timeout=30) as api, httpx.Client(timeout=30) as idp_http:
        providers = api.get(server.rstrip("/") + "/user/v1/providers").json()
        if idp not in providers:
            raise PKIError(ErrorKind.NOT_FOUND, f"the server has no identity provider {idp!r} "
                                                f"(it has: {', '.join(sorted(providers)) or 'none'})")
        prov = providers[idp]
        disco = idp_http.get(prov["issuer"].rstrip("/") + "/.well-known/openid-configuration").json()
        if disco.get("issuer") != prov["issuer"] or "device_authorization_endpoint" not in disco:
            raise PKIError(ErrorKind.CONFIG, "the identity provider offers no device sign-in (RFC 8628)")
        code = device_grant.start(idp_http, disco["device_authorization_endpoint"], prov["client_id"],
                                  prov["scopes"])
        typer.echo(f"To sign in, open {code.verification_uri} and enter the code {code.user_code}"
                   + (f"\n(or open {code.verification_uri_complete} )" if code.verification_uri_complete else ""),
                   err=True)
        tokens = device_grant.poll(idp_http, disco["token_endpoint"], prov["client_id"], code)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise PKIError(ErrorKind.UNAUTHORIZED, "the provider returned no ID token (is 'openid' in scope?)")
        if tpm:
            key, csr_pem = _tpm_csr(tpm, tpm_handle)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            csr_pem = (x509.CertificateSigningRequestBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ikepki user")]))
                       .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        resp = api.post(server.rstrip("/") + "/user/v1/certificates", json={
            "id_token": id_token, "provider": idp, "device": device or socket.gethostname()[:255],
            "csr": csr_pem.decode()})
        doc = resp.json()
        if resp.status_code != 201:
            raise PKIError(ErrorKind.FORBIDDEN if resp.status_code == 403 else ErrorKind.UNAUTHORIZED
                           if resp.status_code == 401 else ErrorKind.BAD_REQUEST,
                           f"{resp.status_code}: {doc.get('detail', resp.text[:200])}")
    out.mkdir(parents=True, exist_ok=True)
    if key is not None:
        _write_private(key_out or out / "key.pem", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (out / "cert.pem").write_text(doc["certificate"])
    (out / "chain.pem").write_text(doc["chain"])
    state = {"server": server, "idp": idp, "ca_bundle": str(ca_bundle) if ca_bundle else None,
             "key": None if tpm else str(key_out or out / "key.pem"), "device": device,
             "tpm": {"tcti": tpm, "handle": hex(tpm_handle)} if tpm else None, "serial": doc["serial"],
             "not_after": doc["not_after"], "identity": doc["identity"], "roles": doc["roles"]}
    (out / "enrollment.json").write_text(json.dumps(state, indent=2))
    if json_out:
        print_json(state)
    else:
        err_console.print(f"certificate {doc['serial']} for {doc.get('email') or doc['identity']} "
                          f"(roles: {', '.join(doc['roles']) or 'none'}) until {doc['not_after']} -> {out}",
                          highlight=False)
    return state


@app.command()
@cli_errors
def enroll(server: ServerOpt, idp: Annotated[str, typer.Option("--idp", help="Provider name on the server.")],
           out: OutOpt, key_out: Annotated[Path | None, typer.Option("--key-out", help="Private key file "
                                                                     "(default OUT/key.pem, mode 0600).")] = None,
           ca_bundle: BundleOpt = None,
           device: Annotated[str | None, typer.Option("--device", help="Device name recorded with the "
                                                      "certificate (default: host name).")] = None,
           tpm: Annotated[str | None, typer.Option("--tpm", help="TCTI: keep the key in this TPM (e.g. "
                                                   "device:/dev/tpmrm0) instead of a key file.")] = None,
           tpm_handle: Annotated[str, typer.Option("--tpm-handle", help="Persistent handle of the key.")]
           = hex(USER_KEY_HANDLE),
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Sign in at the identity provider (device code) and get a user certificate."""
    if tpm and key_out:
        raise typer.BadParameter("--tpm and --key-out exclude each other")
    _enroll(server, idp, out, key_out, ca_bundle, device, json_out, tpm, int(tpm_handle, 16))


@app.command()
@cli_errors
def renew(out: OutOpt, before: Annotated[float, typer.Option("--before", help="Renew when fewer hours than "
                                                             "this are left.")] = 2.0,
          force: Annotated[bool, typer.Option("--force")] = False,
          json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Renew the certificate in OUT (sign in again at the provider) when it is due."""
    from cryptography import x509

    state = json.loads((out / "enrollment.json").read_text())
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    left = cert.not_valid_after_utc - datetime.now(UTC)
    if not force and left > timedelta(hours=before):
        if json_out:
            print_json({"renewed": False, "not_after": cert.not_valid_after_utc.isoformat()})
        else:
            err_console.print(f"not due: valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z", highlight=False)
        return
    tpm = state.get("tpm") or {}
    _enroll(state["server"], state["idp"], out, Path(state["key"]) if state.get("key") else None,
            Path(state["ca_bundle"]) if state.get("ca_bundle") else None, state.get("device"), json_out,
            tpm.get("tcti"), int(tpm.get("handle", hex(USER_KEY_HANDLE)), 16))
