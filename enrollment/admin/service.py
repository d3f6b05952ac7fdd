"""What the admin API does apart from HTTP. Target selection and execution are shared with
``ikepki revoke`` (:mod:`ca.cli.revoke`) so both front ends select the same certificates."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from ca.cli.revoke import Selector
from ca.errors import ErrorKind, PKIError
from ca.store.sql import ADMIN_TOKENS, DEVICES


def selector(req: Any, parse_serial: Any) -> Selector:
    return Selector(tuple(dict.fromkeys(parse_serial(s) for s in req.serials)), req.device_id, req.identity,
                    req.profile, req.subject_contains, req.san_contains, req.expires_before, req.expires_after,
                    req.all_of_profile)


def device(dep: Any, device_id: str) -> dict[str, Any] | None:
    with dep.db.read() as conn:
        row = conn.execute(select(DEVICES).where(DEVICES.c.device_id == device_id)).first()
    return dict(row._mapping) if row else None


def tokens(dep: Any) -> list[dict[str, Any]]:
    with dep.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(ADMIN_TOKENS.c.name, ADMIN_TOKENS.c.role, ADMIN_TOKENS.c.created_at, ADMIN_TOKENS.c.disabled)
            .order_by(ADMIN_TOKENS.c.id))]


def disable_token(dep: Any, name: str) -> None:
    with dep.db.write() as conn:
        if conn.execute(update(ADMIN_TOKENS).where(ADMIN_TOKENS.c.name == name).values(disabled=True)).rowcount != 1:
            raise PKIError(ErrorKind.NOT_FOUND, f"no admin token {name!r}")


def check_gateway_url(kind: str, url: str) -> None:
    if kind == "vici" and not url.startswith("unix:///"):
        raise PKIError(ErrorKind.BAD_REQUEST, "a vici gateway URL is unix:///path/to/charon.vici")
    if kind != "vici" and not url.startswith(("http://", "https://")):
        raise PKIError(ErrorKind.BAD_REQUEST, f"a {kind} gateway URL is http(s)://…")
