"""OCSP responses signed for one request: with an RFC 8954 nonce, or for several CertIDs.

The status is read from the store when the response is signed (RFC 6960 §2.2), so a revocation
is visible at once. The common case, one CertID with a nonce (what strongSwan and ``openssl ocsp
-nonce`` send), is batched (:mod:`ocsp.batch_signer`): concurrent requests share one status query
and one wake-up of the event loop; each gets its own signature. Several CertIDs take one hop to
the signing thread for status read and signature together.

Every ResponseData passes :mod:`ocsp.lint` before it is signed (LintError: nothing signed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from datetime import timedelta

from ca.clock import Clock
from ca.errors import ErrorKind, PKIError
from ocsp.batch_signer import Batcher
from ocsp.lint import LintError, lint_response_data
from ocsp.request import CertIdRequest
from ocsp.responder_der import NOT_ISSUED, CertState, ocsp_response, response_data, single_response
from ocsp.signers import Signer
from ocsp.signing import sign
from ocsp.status_source import NOT_OURS, NotAuthoritative, StatusSource


@contextlib.contextmanager
def _unavailable_on_failure(signer: Signer) -> Iterator[None]:
    """A store or signer failure is ``tryLater`` (PKIError UNAVAILABLE); a lint failure and a serial
    we do not answer for keep their own meaning."""
    try:
        yield
    except (LintError, NotAuthoritative):
        raise
    except Exception as exc:
        raise PKIError(ErrorKind.UNAVAILABLE, f"store or signer for {signer.issuer_id} failed: {exc}") from None

class FreshResponses:
    """Signs per-request responses: statuses from ``status``, signatures on the batch thread
    (nonce) or ``sign_pool`` (several CertIDs)."""

    def __init__(self, status: StatusSource, clock: Clock, validity_seconds: int, sign_pool: Executor,
                 stats: dict[str, int]) -> None:
        self.status = status
        self.clock = clock
        self.validity = timedelta(seconds=validity_seconds)
        self.sign_pool = sign_pool
        self.stats = stats
        self.nonce_jobs: Batcher[tuple[Signer, CertIdRequest, bytes], bytes] = \
            Batcher(self._nonce_batch, name="ocsp-nonce")

    async def with_nonce(self, signer: Signer, cid: CertIdRequest, nonce: bytes) -> bytes:
        """One CertID with a nonce (RFC 8954): worked off in batches by :meth:`_nonce_batch`
        instead of one thread hop per request. PKIError(UNAVAILABLE) when store or signer fail."""
        with _unavailable_on_failure(signer):
            der = await self.nonce_jobs.submit((signer, cid, nonce))
        self.stats["signed"] += 1
        return der

    async def for_cert_ids(self, signer: Signer, cert_ids: Sequence[CertIdRequest], nonce: bytes | None) -> bytes:
        """Several CertIDs (and maybe a nonce): status read and signature in one hop to the
        signing thread."""
        loop = asyncio.get_running_loop()
        with _unavailable_on_failure(signer):
            der = await loop.run_in_executor(self.sign_pool, self._sign_now, signer, list(cert_ids), nonce)
        self.stats["signed"] += 1
        return der

    def _nonce_batch(self, jobs: Sequence[tuple[Signer, CertIdRequest, bytes]]) -> list[bytes | BaseException]:
        """On the batch thread: one status query per issuer for the whole batch, then per request
        the ResponseData spliced from prepared parts (the signer's cached responderID, the CertID
        echoed byte for byte, certStatus, this second's times, the nonce), lint, one signature."""
        serials: dict[str, list[int]] = {}
        for signer, cid, _ in jobs:
            serials.setdefault(signer.issuer_id, []).append(cid.serial)
        states: dict[tuple[str, int], CertState] = {}
        for issuer_id, wanted in serials.items():
            unique = list(dict.fromkeys(wanted))
            states.update(zip(((issuer_id, s) for s in unique), self.status.lookup(issuer_id, unique), strict=True))
        now = self.clock.now().replace(microsecond=0)
        out: list[bytes | BaseException] = []
        for signer, cid, nonce in jobs:
            try:
                state = states[(signer.issuer_id, cid.serial)]
                if state is NOT_OURS:
                    raise NotAuthoritative(cid.serial)
                next_update = min(now + self.validity, signer.not_after)
                tbs = response_data(signer.key_hash, now, [single_response(cid.der, state, now, next_update)], nonce,
                                    state is NOT_ISSUED)
                lint_response_data(tbs)
                out.append(ocsp_response(tbs, signer.alg_id, sign(signer.key, tbs), signer.certs_der))
            except Exception as exc:
                out.append(exc)
        return out

    def _sign_now(self, signer: Signer, cert_ids: list[CertIdRequest], nonce: bytes | None) -> bytes:
        states = self.status.lookup(signer.issuer_id, [c.serial for c in cert_ids])
        if NOT_OURS in states:  # one answer covers every CertID: none is signed when one is not ours
            raise NotAuthoritative(cert_ids[states.index(NOT_OURS)].serial)
        now = self.clock.now().replace(microsecond=0)
        next_update = min(now + self.validity, signer.not_after)
        singles = [single_response(c.der, st, now, next_update) for c, st in zip(cert_ids, states, strict=True)]
        tbs = response_data(signer.key_hash, now, singles, nonce, any(st is NOT_ISSUED for st in states))
        lint_response_data(tbs)
        return ocsp_response(tbs, signer.alg_id, sign(signer.key, tbs), signer.certs_der)

    def close(self) -> None:
        self.nonce_jobs.close()
