"""Who is calling, read the same way at every HTTP edge: the peer's address from the ASGI scope and
the bearer credential of an ``Authorization`` header. What a credential is worth (admin token, ID
token, hook secret) stays with the edge that checks it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def client_ip(scope: Mapping[str, Any]) -> str:
    """The peer address of the connection (ASGI ``scope["client"]``), "" when the server gives none."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def bearer_token(header: str | None, max_len: int | None = None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1; the scheme is
    case-insensitive, RFC 9110 §11.1); None when absent, another scheme, empty, or longer than
    ``max_len`` (an edge that bounds the token itself, with its own error, passes None)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or (max_len is not None and len(value) > max_len):
        return None
    return value
