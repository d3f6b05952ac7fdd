"""The command line's client of a server's admin API (``/admin/v1``, bearer token): the options every
remote-capable command takes (``--server URL --token FILE [--ca-bundle FILE]``), the one place that
reads the token file, builds the TLS client and turns HTTP errors into :class:`~ca.errors.PKIError`
kinds, so a remote command exits with the same codes and one-line errors as the local one
(:mod:`ca.cli.common`: 3 not found, 5 bad request, 7 unauthorized/forbidden, …).

Commands choose local or remote with :func:`remote_admin` and then call :meth:`AdminClient.call`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ca.errors import ErrorKind, PKIError

if TYPE_CHECKING:
    import httpx

ServerOption = Annotated[str | None, typer.Option("--server", envvar="IKEPKI_SERVER",
                                                  help="Admin API base URL, e.g. https://ca.example.test:8443.")]
TokenOption = Annotated[Path | None, typer.Option("--token", envvar="IKEPKI_ADMIN_TOKEN_FILE",
                                                  help="File holding an admin API bearer token.")]
BundleOption = Annotated[Path | None, typer.Option("--ca-bundle", help="CA bundle for the server's TLS cert.")]

# HTTP status of an admin API problem document -> the kind (and so the exit code) of the CLI error
_KINDS = {400: ErrorKind.BAD_REQUEST, 401: ErrorKind.UNAUTHORIZED, 403: ErrorKind.FORBIDDEN,
          404: ErrorKind.NOT_FOUND, 409: ErrorKind.CONFLICT, 422: ErrorKind.BAD_REQUEST,
          503: ErrorKind.UNAVAILABLE}


class AdminClient:
    """A server's admin API (``/admin/v1``) with the bearer token read from ``token_file``; TLS verified
    against ``ca_bundle`` (default: the system trust store)."""

    def __init__(self, url: str, token_file: Path, ca_bundle: Path | None = None) -> None:
        import ssl

        import httpx

        token = token_file.read_text().strip()
        if not token or not token.isprintable() or any(c.isspace() for c in token):
            raise PKIError(ErrorKind.CONFIG, f"--token {token_file}: not an admin API token (empty or with spaces)")
        self.base = url.rstrip("/") + "/admin/v1"
        verify = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else ssl.create_default_context()
        self.client: httpx.Client = httpx.Client(
            verify=verify, timeout=300, headers={"authorization": f"Bearer {token}", "user-agent": "ikepki-cli"})

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """``method /admin/v1<path>`` with ``body`` as JSON; the decoded JSON answer (``None`` if empty).
        Unreachable: ``UNAVAILABLE``; an HTTP error: the kind of its status, with the problem's detail."""
        import httpx

        try:
            resp = self.client.request(method, self.base + path, json=body)
        except httpx.HTTPError as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"admin API unreachable: {exc}") from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail")
            except (ValueError, AttributeError):
                detail = None
            raise PKIError(_KINDS.get(resp.status_code, ErrorKind.INTERNAL),
                           f"admin API: HTTP {resp.status_code}: {detail or resp.text[:200]}")
        return resp.json() if resp.content else None


def remote_admin(server: str | None, token: Path | None, ca_bundle: Path | None) -> AdminClient | None:
    """The admin client ``--server`` names (``None``: work on the local deployment); ``--server``
    without ``--token`` is a configuration error."""
    if not server:
        return None
    if token is None:
        raise PKIError(ErrorKind.CONFIG, "--server needs --token FILE (an admin API token)")
    return AdminClient(server, token, ca_bundle)
