"""Background tasks of the ocsp package (entry point ``ikepki.workers``: ocsp):

- ``crl-publisher``: full/delta/root CRLs on schedule and, debounced, after revocations, under
  the ``crl-publisher`` lease (one publisher across replicas);
- ``ocsp-presign``: the responder's revocation-feed poll and pre-signed response refresh;
- ``ocsp-signer-rotation``: re-issues delegated OCSP signer certificates before they expire.
"""

from __future__ import annotations

from typing import Any

from ca.service.server import BackgroundTask
from ocsp.runtime import runtime_for


def background_tasks(deployment: Any) -> list[BackgroundTask]:
    rt = runtime_for(deployment)
    return [BackgroundTask("crl-publisher", rt.crl_loop), BackgroundTask("ocsp-presign", rt.presign_loop),
            BackgroundTask("ocsp-signer-rotation", rt.rotation_loop)]
