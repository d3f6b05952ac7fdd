"""Background tasks of the ocsp package (entry point ``ikepki.workers``: ocsp):

- ``crl-publisher``: full/delta/root CRLs on schedule and, debounced, after revocations, under
  the ``crl-publisher`` lease (one publisher across replicas);
- ``ocsp-presign``: the responder's revocation-feed poll and pre-signed response refresh;
- ``ocsp-signer-rotation``: re-issues delegated OCSP signer certificates before they expire.
"""

from __future__ import annotations

from ca.ports import ServiceKeys
from ca.service.server import BackgroundTask
from ocsp.runtime import CRL_LOOP, CRL_MAX_SILENCE_SECONDS, runtime_for


def background_tasks(deployment: ServiceKeys) -> list[BackgroundTask]:
    rt = runtime_for(deployment)
    return [BackgroundTask(CRL_LOOP, rt.crl_loop, max_silence=CRL_MAX_SILENCE_SECONDS),
            BackgroundTask("ocsp-presign", rt.presign_loop),
            BackgroundTask("ocsp-signer-rotation", rt.rotation_loop)]
