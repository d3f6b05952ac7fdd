"""``ikepki acme …``: External Account Binding keys (RFC 8555 §7.3.4) and their policy."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any

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
from ca.errors import ErrorKind, PKIError
from enrollment.acme.jws import b64e
from enrollment.acme.messages import PATTERN_FORMS, parse_pattern
from enrollment.acme.settings import AcmeSettings
from enrollment.acme.store import AcmeStore

app = typer.Typer(help="ACME server administration.", no_args_is_help=True)
eab_app = typer.Typer(help="External Account Binding keys.", no_args_is_help=True)
app.add_typer(eab_app, name="eab")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_PATTERNS = 64


def parse_expiry(value: str, now: datetime) -> datetime:
    """A duration (``90m``, ``24h``, ``7d``) or an ISO 8601 date-time with offset."""
    match = _DURATION.match(value.strip())
    if match:
        return now + timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PKIError(ErrorKind.BAD_REQUEST, f"--expires {value!r}: use 24h, 7d or an ISO date-time") from None
    if parsed.tzinfo is None:
        raise PKIError(ErrorKind.BAD_REQUEST, "--expires needs a time zone (e.g. 2027-01-01T00:00:00Z)")
    if parsed <= now:
        raise PKIError(ErrorKind.BAD_REQUEST, "--expires is in the past")
    return parsed


def parse_patterns(value: str) -> list[str]:
    """``--identifiers``: comma-separated patterns (:data:`PATTERN_FORMS`)."""
    raw = [p for p in value.split(",") if p.strip()]
    if not raw or len(raw) > MAX_PATTERNS:
        raise PKIError(ErrorKind.BAD_REQUEST, f"--identifiers needs 1 to {MAX_PATTERNS} patterns: {PATTERN_FORMS}")
    try:
        return list(dict.fromkeys(parse_pattern(p) for p in raw))
    except ValueError as exc:
        raise PKIError(ErrorKind.BAD_REQUEST, f"--identifiers: {exc}") from None


IDENTIFIERS_HELP = ("Allowed identifiers, PATTERN[,PATTERN…]: '*' (everything, TPM devices included), "
                    "'*.example.test' (any name below), an exact name, an IP, a CIDR, 'device:*' (any attested "
                    "TPM device) or one device's identifier.")


@eab_app.command("create")
@cli_errors
def eab_create(
    profile: Annotated[str, typer.Option("--profile", help="Certificate profile the account may use.")],
    identifiers: Annotated[str, typer.Option("--identifiers", help=IDENTIFIERS_HELP)],
    expires: Annotated[str | None, typer.Option("--expires", help="Key expiry: 24h, 7d or ISO date-time.")] = None,
    single_use: Annotated[bool, typer.Option("--single-use", help="Bind at most one account.")] = False,
    directory: DirOption = DEFAULT_DIR,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an EAB key; prints the key id and the base64url HMAC key (shown once)."""
    dep = open_deployment(directory, config)
    settings = dep.settings_for(AcmeSettings, "acme")
    if profile not in settings.profiles:
        raise PKIError(ErrorKind.BAD_REQUEST, f"profile {profile!r} is not offered over ACME "
                                              f"({', '.join(settings.profiles)})")
    dep.authority.profile(profile)
    now = dep.clock.now()
    expiry = parse_expiry(expires, now) if expires else None
    patterns = parse_patterns(identifiers)
    kid, key = "eab-" + secrets.token_urlsafe(12), secrets.token_bytes(32)
    AcmeStore(dep.db).add_eab_key(kid, key, profile, patterns, expiry, single_use, now)
    dep.audit.append(now, cli_principal(), "acme-eab-create", "cli", eab_kid=kid, profile=profile, identifiers=patterns,
                     single_use=single_use)
    result = {"kid": kid, "hmac_key": b64e(key), "profile": profile, "identifiers": patterns,
              "expires": expiry.isoformat() if expiry else None, "single_use": single_use}
    if json_out:
        print_json(result)
    else:
        lines = [f"key id:   {kid}", f"hmac key: {b64e(key)}", f"profile:  {profile}",
                 f"allows:   {', '.join(patterns)}"]
        lines += [f"expires:  {expiry.isoformat()}"] if expiry else []
        lines += ["single use"] if single_use else []
        console.print("\n".join(lines), highlight=False, markup=False)


@eab_app.command("list")
@cli_errors
def eab_list(directory: DirOption = DEFAULT_DIR, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """List EAB keys and their policy (never the HMAC keys)."""
    dep = open_deployment(directory, config)
    rows: list[dict[str, Any]] = [{"kid": k.kid, "profile": k.profile, "identifiers": list(k.identifiers),
             "expires": k.expires.isoformat() if k.expires else None, "single_use": k.single_use,
             "used": k.used_count, "disabled": k.disabled} for k in AcmeStore(dep.db).eab_keys()]
    if json_out:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['kid']}  {r['profile']}  {','.join(r['identifiers'])}  used={r['used']}"
                      f"{'  single-use' if r['single_use'] else ''}{'  DISABLED' if r['disabled'] else ''}",
                      highlight=False)


@eab_app.command("disable")
@cli_errors
def eab_disable(kid: str, directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
                json_out: JsonOption = False) -> None:
    """Disable an EAB key: no new accounts, and bound accounts can no longer order."""
    dep = open_deployment(directory, config)
    if not AcmeStore(dep.db).disable_eab_key(kid):
        raise PKIError(ErrorKind.NOT_FOUND, f"no EAB key {kid!r}")
    dep.audit.append(dep.clock.now(), cli_principal(), "acme-eab-disable", "cli", eab_kid=kid)
    if json_out:
        print_json({"kid": kid, "disabled": True})
    else:
        console.print(f"disabled {kid}", highlight=False)
