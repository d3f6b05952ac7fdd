"""Bounded reading of an HTTP request body from the ASGI ``receive`` channel.

One implementation for every protocol edge (ACME, EST, SCEP, OCSP, TPM attestation): a declared
``Content-Length`` above the bound is refused before anything is read (RFC 9110 §8.6), and the
actual bytes are counted as they arrive, so a chunked body cannot exceed the bound either. Each
edge maps the exceptions to its own protocol's error (413, an ACME problem, an OCSP
malformedRequest …).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]  # ASGI receive (starlette.types.Receive)


class BodyError(Exception):
    """The body cannot be read within the rules."""


class BodyTooLarge(BodyError):
    """Declared or actual length above the bound (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class InvalidContentLength(BodyError):
    """A Content-Length that is not a decimal number (RFC 9110 §8.6; HTTP 400)."""

    def __init__(self) -> None:
        super().__init__("invalid Content-Length")


class ClientDisconnected(BodyError):
    """The client went away before the body was complete."""

    def __init__(self) -> None:
        super().__init__("client disconnected")


def declared_length(value: bytes | str | None) -> int | None:
    """The Content-Length header's value as an int, None when absent."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidContentLength
    return int(text)


async def read_body(receive: Receive, limit: int, content_length: bytes | str | None = None) -> bytes:
    """The whole body, at most ``limit`` bytes; raises :class:`BodyTooLarge`, :class:`InvalidContentLength`
    or :class:`ClientDisconnected`."""
    declared = declared_length(content_length)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
