"""The in-memory cache of pre-signed OCSP responses (RFC 5019 §2.2.2, §6), one per worker process.

Keyed by the CertID DER as the client sent it (hash algorithm, issuer name and key hashes,
serial): nothing else of a request is kept, so padding, extensions or signatures cannot grow it.
Each worker of ``ikepki serve --workers N`` has its own cache, so the bound below holds **per
worker** (N workers: up to N times the memory; the signatures themselves are shared between them
through :mod:`ocsp.shared_presigned`).

Bounded twice: at most ``max_entries`` responses and at most ``max_bytes`` bytes as counted by
:meth:`Presigned.size` (the DER, the key, the precomputed headers and a measured per-entry
overhead for the objects and the index slots). An entry that does not fit evicts the least
recently asked-for entries first (true LRU, O(1) per hit and per eviction: an ``OrderedDict``
moved to the end on every hit).

Measured (tracemalloc; ``tests/ocsp/test_presigned_cache.py`` checks the count covers it):
100,000 responses of a delegated P-256 signer (790 bytes DER each, 523 of them the signer's
certificate, shared; ~76-byte SHA-1 CertID keys) hold 109 MB and count 113 MB against
``max_bytes``, ~1.1 KB per certificate. Before the split the same 100,000 held 172 MB while
counting 136 MB (a guessed per-entry overhead of 400 bytes, the certificate copied into every
entry, a set per serial in the index). The defaults (500,000 entries, 256 MiB) therefore stop at
~236,000 such responses, ~245 MB, per worker.

``by_serial`` indexes the keys of every (issuer, serial): a revocation drops all forms of the
CertID (SHA-1, SHA-256, ...) the cache holds for that certificate at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from email.utils import formatdate

ENTRY_OVERHEAD = 700  # bytes per entry beyond those counted (measured 600-670: objects, dict, LRU, index)


def http_date(ts: float) -> bytes:
    """IMF-fixdate (RFC 9110 §5.6.7) for Last-Modified / Expires."""
    return formatdate(ts, usegmt=True).encode()


@dataclass(slots=True)
class Presigned:
    """A signed response ready to serve, with its RFC 5019 §6.2 cache headers precomputed.

    The response DER is ``head + tail``: ``tail`` is the ``certs`` field that ends every response
    of a delegated signer (its certificate, ~460 bytes for P-256), one bytes object shared by all
    of that signer's entries and not counted per entry."""

    head: bytes
    issuer_id: str
    serial: int
    this_update: float
    next_update: float
    etag: bytes
    last_modified: bytes
    expires: bytes
    tail: bytes = b""
    last_hit: float = field(default_factory=time.monotonic)

    @property
    def body(self) -> bytes:
        return self.head + self.tail

    def size(self, key: bytes) -> int:
        """Bytes this entry holds in the cache (for the ``max_bytes`` bound)."""
        return len(self.head) + len(key) + len(self.etag) + len(self.last_modified) + len(self.expires) \
            + ENTRY_OVERHEAD

    def headers(self, now: float) -> list[tuple[bytes, bytes]]:
        max_age = max(0, int(self.next_update - now))
        return [(b"cache-control", b"max-age=%d, public, no-transform, must-revalidate" % max_age),
                (b"etag", self.etag), (b"last-modified", self.last_modified), (b"expires", self.expires)]


class PresignedCache:
    """CertID DER -> :class:`Presigned`, bounded by entries and bytes, least recently asked-for
    evicted first. Event-loop only (not thread-safe)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: OrderedDict[bytes, Presigned] = OrderedDict()  # least recently asked-for first
        self.bytes = 0
        self.by_serial: dict[tuple[str, int], tuple[bytes, ...]] = {}  # tuples: a set costs 200+ bytes
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.entries)

    def fresh(self, key: bytes, now: float) -> Presigned | None:
        """The entry for ``key`` if it is still valid at ``now`` (wall clock); counts as a hit."""
        entry = self.entries.get(key)
        if entry is None or now >= entry.next_update:
            return None
        entry.last_hit = time.monotonic()
        self.entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: Presigned) -> None:
        """Insert or replace; evicts the least recently asked-for entries until it fits."""
        self.drop(key)
        size = entry.size(key)
        if size > self.max_bytes:
            return  # cannot fit even alone (the bound is >= 64 KiB, a response < 64 KiB)
        while self.entries and (len(self.entries) >= self.max_entries or self.bytes + size > self.max_bytes):
            self.drop(next(iter(self.entries)))
            self.evicted += 1
        self.entries[key] = entry
        self.bytes += size
        index = (entry.issuer_id, entry.serial)
        self.by_serial[index] = (*self.by_serial.get(index, ()), key)  # not there: drop(key) above

    def drop(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry.size(key)
        index = (entry.issuer_id, entry.serial)
        rest = tuple(k for k in self.by_serial.get(index, ()) if k != key)
        if rest:
            self.by_serial[index] = rest
        else:
            self.by_serial.pop(index, None)

    def drop_serial(self, issuer_id: str, serial: int) -> list[bytes]:
        """Drop every cached form of (issuer, serial)'s CertID; returns their keys."""
        keys = list(self.by_serial.get((issuer_id, serial), ()))
        for key in keys:
            self.drop(key)
        return keys

    def items(self) -> list[tuple[bytes, Presigned]]:
        """A snapshot of (key, entry), least recently asked-for first."""
        return list(self.entries.items())
