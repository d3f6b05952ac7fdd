"""Shared CLI plumbing: --dir/--config/--json, one readable error line, documented exit codes.

Exit codes (stable, for scripts and SOAR playbooks):
  0  success
  1  unexpected failure
  2  usage or configuration error
  3  not found
  4  conflict (already exists, already revoked, CA already initialised)
  5  refused: bad input (bad CSR, forbidden identifier, unknown reason)
  6  unavailable: HSM or database unreachable (retry later)
  7  unauthorized or forbidden (remote admin API)
 10  dry run: nothing was changed (revoke without --yes when not confirmed)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ca.errors import ErrorKind, PKIError

EXIT = {ErrorKind.CONFIG: 2, ErrorKind.NOT_FOUND: 3, ErrorKind.CONFLICT: 4, ErrorKind.BAD_CSR: 5,
        ErrorKind.BAD_REQUEST: 5, ErrorKind.REJECTED_IDENTIFIER: 5, ErrorKind.BLOCKED: 5, ErrorKind.UNAVAILABLE: 6,
        ErrorKind.UNAUTHORIZED: 7, ErrorKind.FORBIDDEN: 7, ErrorKind.INTERNAL: 1}
EXIT_DRY_RUN = 10

console = Console(soft_wrap=True)  # lines the terminal wraps, not rich: serials, URLs, keys stay copyable
err_console = Console(stderr=True, soft_wrap=True)

DirOption = Annotated[Path, typer.Option("--dir", envvar="IKEPKI_DIR", help="Deployment directory.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", envvar="IKEPKI_CONFIG",
                                                   help="Config file (default DIR/ikepki.yaml).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
DEFAULT_DIR = Path("./var")

F = TypeVar("F", bound=Callable[..., Any])


def cli_principal() -> str:
    """Who runs this command, as audit lines and issuance records name a CLI user: ``<login>@cli``
    (``cli`` when the login name cannot be determined, e.g. a container without a passwd entry)."""
    import getpass

    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "cli"


def fail(message: str, code: int = 1) -> typer.Exit:
    # the message is data (paths, URLs, TLS errors like "[SSL: …]"), never rich markup
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Turn PKIError (and a few OS errors) into one readable line and a documented exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PKIError as exc:
            raise fail(exc.detail, EXIT.get(exc.kind, 1)) from None
        except FileNotFoundError as exc:
            raise fail(f"file not found: {exc.filename}", 2) from None
        except PermissionError as exc:
            raise fail(f"permission denied: {exc.filename}", 2) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def open_deployment(directory: Path, config: Path | None = None) -> Any:
    from ca.deployment import Deployment

    return Deployment.open(directory, config)


def setup_logging() -> None:
    import logging

    logging.basicConfig(level=os.environ.get("IKEPKI_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
