"""PINs are passed by reference (``file:/path`` or ``env:NAME``), never by value in config or logs."""

from __future__ import annotations

import os
from pathlib import Path

from ca.errors import ErrorKind, PKIError


class Pin:
    """A secret whose repr never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Pin(***)"

    __str__ = __repr__


def resolve_pin(source: str, *, base: Path | None = None) -> Pin:
    """Read a PIN from ``file:PATH`` (relative to ``base``) or ``env:NAME`` (RFC 7512 pin-source)."""
    scheme, _, ref = source.partition(":")
    if scheme == "file" and ref:
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise PKIError(ErrorKind.CONFIG, f"cannot read PIN file {path}: {exc.strerror}") from None
    elif scheme == "env" and ref:
        value = os.environ.get(ref, "")
        if not value:
            raise PKIError(ErrorKind.CONFIG, f"PIN environment variable {ref} is not set")
    else:
        raise PKIError(ErrorKind.CONFIG, "PIN source must be 'file:PATH' or 'env:NAME'")
    if not value:
        raise PKIError(ErrorKind.CONFIG, f"PIN source {source} is empty")
    return Pin(value)
