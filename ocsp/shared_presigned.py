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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

MAX_BYTES = 64 * 1024  # a response we wrote; anything larger in the directory is not ours


class SharedPresigned:
    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
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
        tmp = self.dir / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp.write_bytes(der)
            os.link(tmp, self.dir / key)
            return der
        except FileExistsError:
            return self.get(key) or der
        except OSError:
            return der
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def expire(self, max_age: float) -> int:
        """Delete files older than ``max_age`` seconds (blocking); returns how many."""
        if self.dir is None:
            return 0
        limit = time.time() - max_age
        removed = 0
        with os.scandir(self.dir) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < limit:
                        os.unlink(entry.path)
                        removed += 1
        return removed
