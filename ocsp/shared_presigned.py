"""Pre-signed OCSP responses shared by the worker processes of one ``ikepki serve --workers N``.

ECDSA signatures (and SoftHSM's CKM_ECDSA) are randomised: two workers signing the same
ResponseData produce different bytes, so a client would get a different body and ETag (no
``304``) depending on the worker that answers. Each worker therefore looks here before signing
a pre-signed response: the file name is the SHA-256 of what is signed plus how (ResponseData,
signature algorithm, signer certificates), so a hit is the same response by construction. The
first worker to publish wins (``link`` of a complete temporary file: never a partial read); the
others serve its bytes and spend no HSM signature. Files live in the supervisor's temporary
directory (removed when the service stops) and are deleted once past ``max_age`` seconds.
Without a supervisor (one process) nothing is shared.

Bounded like the in-memory cache: at most ``max_bytes`` (``ocsp.cache_max_bytes``), each file
counted as at least one 4 KiB page or block (the directory may be a tmpfs, i.e. memory). The count
is taken by every :meth:`expire` scan and grown by each process's own publications since; when it
is full a worker serves the response it signed without publishing it (its ETag then differs from
other workers' until the next refresh), so N workers may overshoot by what each publishes between
two scans.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

MAX_BYTES = 64 * 1024  # a response we wrote; anything larger in the directory is not ours
FILE_COST = 4096  # what a small file costs at least (a tmpfs page, a filesystem block)


def file_cost(size: int) -> int:
    return max(FILE_COST, -(-size // FILE_COST) * FILE_COST)


class SharedPresigned:
    def __init__(self, directory: Path | None, max_bytes: int | None = None) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.used = 0  # bytes in the directory at the last expire() scan plus what we published since
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(tbs: bytes, alg_id: bytes, certs_der: list[bytes]) -> str:
        h = hashlib.sha256(tbs)
        h.update(alg_id)
        for cert in certs_der:
            h.update(cert)
        return h.hexdigest()

    def get(self, key: str) -> bytes | None:
        """The response another worker published under ``key`` (blocking, small file)."""
        if self.dir is None:
            return None
        try:
            with open(self.dir / key, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError:
            return None
        return data if 0 < len(data) <= MAX_BYTES else None

    def publish(self, key: str, der: bytes) -> bytes:
        """Publish ``der`` unless another worker was first; returns the bytes to serve."""
        if self.dir is None:
            return der
        cost = file_cost(len(der))
        if self.max_bytes is not None and self.used + cost > self.max_bytes:
            return self.get(key) or der  # full: share nothing new until expire() makes room
        tmp = self.dir / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp.write_bytes(der)
            os.link(tmp, self.dir / key)
            self.used += cost
            return der
        except FileExistsError:
            return self.get(key) or der
        except OSError:
            return der
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def expire(self, max_age: float) -> int:
        """Delete files older than ``max_age`` seconds and count the bytes of the others (blocking);
        returns how many were deleted."""
        if self.dir is None:
            return 0
        limit = time.time() - max_age
        removed = used = 0
        with os.scandir(self.dir) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    if st.st_mtime < limit:
                        os.unlink(entry.path)
                        removed += 1
                    else:
                        used += file_cost(st.st_size)
        self.used = used
        return removed
