"""Producing the pre-signed OCSP responses (RFC 5019 §2.2.2) the cache serves.

A response is produced **lazily on the first request** for its CertID (concurrent first requests
share one signature) and again when the maintenance loop (:mod:`ocsp.maintenance`) asks: after a
revocation or release, and when half its validity has passed. Never at issuance: the core offers
no issuance hook, and pre-signing 100k+ certificates per replica at start would cost seconds of
HSM time for responses most of which are never asked for.

thisUpdate is rounded down to ``bucket_seconds`` (revoked: not before the revocation second) and
producedAt equals it, so replicas and workers sign identical ResponseData for identical state; a
worker takes the bytes another worker already signed for it (:mod:`ocsp.shared_presigned`: ECDSA
signatures are randomised, and clients should see one body and ETag).

A status that changes while its response is being signed (the revocation feed says so through
:meth:`Presigner.invalidate`) is served to the requests waiting for it but not cached; the
response signed after the change is (before the split it was not either, so a revoked
certificate's responses were signed again for every request until the next revocation).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta

from ca.clock import Clock
from ca.errors import ErrorKind, PKIError
from ocsp.lint import lint_response_data
from ocsp.presigned_cache import Presigned, PresignedCache, http_date
from ocsp.request import CertIdRequest
from ocsp.responder_der import NOT_ISSUED, CertState, ocsp_response, response_data, single_response
from ocsp.shared_presigned import SharedPresigned
from ocsp.signers import CurrentSigners, Signer
from ocsp.signing import sign
from ocsp.status_source import NOT_OURS, NotAuthoritative, StatusSource

MAX_CHANGED = 100_000  # remembered status changes before those no signing in flight can see are forgotten


class Presigner:
    """Fills ``cache``: status from ``status``, signature by the issuer's current signer on
    ``sign_pool``; store reads and shared-file I/O on ``read_pool``. Event-loop side only."""

    def __init__(self, cache: PresignedCache, status: StatusSource, signers: CurrentSigners, clock: Clock,
                 validity_seconds: int, bucket_seconds: int, shared: SharedPresigned, sign_pool: Executor,
                 read_pool: Executor, stats: dict[str, int]) -> None:
        self.cache = cache
        self.status = status
        self.signers = signers
        self.clock = clock
        self.validity = timedelta(seconds=validity_seconds)
        self.bucket = bucket_seconds
        self.shared = shared
        self.sign_pool = sign_pool
        self.read_pool = read_pool
        self.stats = stats
        self._inflight: dict[bytes, asyncio.Task[Presigned]] = {}
        self._changed: dict[tuple[str, int], int] = {}  # (issuer, serial) -> epoch of its last change
        self._epoch = 0  # one per change
        self._signing: dict[int, int] = {}  # epoch a pre-sign in flight started in -> how many

    async def get(self, issuer_id: str, cid: CertIdRequest) -> Presigned:
        """The cached response for ``cid``, else one signed now (shared with concurrent callers).
        PKIError(UNAVAILABLE) when the store or the signer fails; LintError: never signed."""
        entry = self.cache.fresh(cid.der, time.time())
        if entry is not None:
            self.stats["presigned_hits"] += 1
            return entry
        task = self._inflight.get(cid.der)
        if task is None:
            # its own task: a caller that goes away (client disconnect) cancels only its wait,
            # never the signature the other callers of the same CertID are waiting for
            task = asyncio.create_task(self.presign(issuer_id, cid.der, cid.serial))
            self._inflight[cid.der] = task
            task.add_done_callback(functools.partial(self._presigned, cid.der))
        return await asyncio.shield(task)

    def _presigned(self, key: bytes, task: asyncio.Task[Presigned]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller went away

    async def presign(self, issuer_id: str, cid_der: bytes, serial: int) -> Presigned:
        """Read the status, sign, and cache unless the status changed meanwhile."""
        loop = asyncio.get_running_loop()
        if not self.status.following:  # the feed must have its position before the first status we cache
            await loop.run_in_executor(self.read_pool, self.status.follow)
        epoch = self._epoch
        self._signing[epoch] = self._signing.get(epoch, 0) + 1
        try:
            try:
                state = (await loop.run_in_executor(self.read_pool, self.status.lookup, issuer_id, [serial]))[0]
            except Exception as exc:
                raise PKIError(ErrorKind.UNAVAILABLE, f"store: {exc}") from None
            if state is NOT_OURS:
                raise NotAuthoritative(serial)
            signer = await self.signers.get(issuer_id)
            this_update = self.this_update(self.clock.now(), state)
            next_update = min(this_update + self.validity, signer.not_after)
            der = await self._sign_shared(signer, cid_der, state, this_update, next_update)
            tail = signer.certs_field if signer.certs_field and der.endswith(signer.certs_field) else b""
            entry = Presigned(der[:len(der) - len(tail)], issuer_id, serial, this_update.timestamp(),
                              next_update.timestamp(), b'"' + hashlib.sha256(der).hexdigest()[:32].encode() + b'"',
                              http_date(this_update.timestamp()), http_date(next_update.timestamp()), tail)
            if self._changed.get((issuer_id, serial), 0) > epoch:
                return entry  # the status changed after we read it: serve once, do not cache
            self.cache.put(cid_der, entry)
            return entry
        finally:
            left = self._signing[epoch] - 1
            if left:
                self._signing[epoch] = left
            else:
                del self._signing[epoch]

    def this_update(self, now: datetime, state: CertState) -> datetime:
        """``now`` rounded down to the bucket; a revocation inside the bucket: its second."""
        ts = int(now.timestamp()) // self.bucket * self.bucket
        bucketed = datetime.fromtimestamp(ts, UTC)
        if state.kind == "revoked" and state.revoked_at is not None and state.revoked_at > bucketed:
            return min(state.revoked_at.replace(microsecond=0), now.replace(microsecond=0))
        return bucketed

    def invalidate(self, issuer_id: str, serial: int) -> list[bytes]:
        """The status of (issuer, serial) changed: drop its cached responses (returns their keys)
        and keep a response whose status was read before now out of the cache."""
        self._epoch += 1
        self._changed[(issuer_id, serial)] = self._epoch
        if len(self._changed) > MAX_CHANGED:  # only changes after the oldest signing in flight matter
            floor = min(self._signing, default=self._epoch)
            self._changed = {k: v for k, v in self._changed.items() if v > floor}
        return self.cache.drop_serial(issuer_id, serial)

    async def _sign_shared(self, signer: Signer, cid_der: bytes, state: CertState, this_update: datetime,
                           next_update: datetime) -> bytes:
        """Lint and sign the ResponseData (producedAt = thisUpdate, no nonce), or take the bytes
        another worker already signed for exactly this ResponseData (and publish ours if none)."""
        tbs = response_data(signer.key_hash, this_update, [single_response(cid_der, state, this_update, next_update)],
                            None, state is NOT_ISSUED)
        lint_response_data(tbs)
        loop = asyncio.get_running_loop()
        key = self.shared.key(tbs, signer.alg_id, signer.certs_der) if self.shared.dir else None
        if key is not None:
            found = await loop.run_in_executor(self.read_pool, self.shared.get, key)
            if found is not None:
                return found
        try:
            signature = await loop.run_in_executor(self.sign_pool, sign, signer.key, tbs)
        except Exception as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"signer for {signer.issuer_id} failed: {exc}") from None
        self.stats["signed"] += 1
        der = ocsp_response(tbs, signer.alg_id, signature, signer.certs_der)
        if key is not None:
            der = await loop.run_in_executor(self.read_pool, self.shared.publish, key, der)
        return der
