"""Tamper-evident audit log: one JSON line per event. Each line carries ``hash`` (SHA-256 of
its own canonical JSON without ``hash``) and ``prev`` (the previous line's ``hash``), so an
edited line fails its own hash and a removed or reordered line breaks the chain.

Several processes may append to one file: an exclusive ``flock`` covers read-last-line and
append.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ca.errors import ErrorKind, PKIError

GENESIS = "0" * 64


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()


def _content_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: audit lines go nowhere (unit tests)

    def append(self, at: datetime, actor: str, action: str, channel: str, **fields: Any) -> None:
        """Append one line (flushed to the file before returning). An unwritable sink raises
        ``PKIError(UNAVAILABLE)``: callers write the line inside their DB transaction (see
        :class:`ca.authority.Authority`), so nothing is committed that the file does not show."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"audit log {self.path} is not writable ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            record: dict[str, Any] = {"at": at.isoformat(), "actor": actor, "action": action, "channel": channel,
                                      **fields, "prev": _last_hash(fd)}
            record["hash"] = _content_hash(record)
            line = _canonical(record) + b"\n"
            if os.write(fd, line) != len(line):
                raise PKIError(ErrorKind.UNAVAILABLE, f"audit log {self.path}: short write (disk full?)")
        except OSError as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"audit log {self.path} is not writable ({exc.strerror})") from None
        finally:
            os.close(fd)


def _last_hash(fd: int) -> str:
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return GENESIS
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        lines = os.pread(fd, size - start, start).rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or start == 0:
            try:
                return str(json.loads(lines[-1])["hash"])
            except (ValueError, KeyError, TypeError):
                return hashlib.sha256(lines[-1]).hexdigest()  # keep chaining past a damaged line
        chunk *= 4


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    lines: int
    bad_line: int | None = None
    problem: str | None = None


def verify(path: Path) -> AuditVerification:
    """Check each line's own hash and its link to the line before it."""
    prev = GENESIS
    count = 0
    with path.open("rb") as fh:
        for count, raw in enumerate(fh, start=1):
            try:
                record = json.loads(raw)
            except ValueError:
                return AuditVerification(False, count, count, "not valid JSON")
            if not isinstance(record, dict) or record.get("hash") != _content_hash(record):
                return AuditVerification(False, count, count, "line content does not match its hash (edited)")
            if record.get("prev") != prev:
                return AuditVerification(False, count, count, "hash chain broken (a line was removed or reordered)")
            prev = record["hash"]
    return AuditVerification(True, count)
