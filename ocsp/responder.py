"""The OCSP responder (RFC 6960, RFC 5019 profile, RFC 8954 nonce) for every ikepki issuing CA.

Answers:
- For the issuing CAs' certificates too, under the root CA and signed by the root key (no AIA OCSP
  in the intermediates: relying parties configure the URL, e.g. strongSwan ``authorities``).
- Issuer matched by CertID issuerNameHash + issuerKeyHash (SHA-1, SHA-256, SHA-384, SHA-512).
- good / revoked (time, reason; holds as certificateHold) / unknown for serials ikepki never
  issued under that CA (``ocsp.non_issued: revoked`` answers revoked + certificateHold at the epoch
  with the extended-revoke extension instead, RFC 6960 §2.2); ``unauthorized`` when a CertID names
  a CA that is not ours (or several of ours: one delegated signer cannot vouch for two CAs);
  ``malformedRequest`` for anything unparsable, > ``max_requests`` CertIDs, or a nonce outside
  1..32 octets, an unknown critical extension or trailing data; ``unauthorized`` as well for a
  signed request (``optionalSignature``): this responder authorizes no requestor, and answering
  as if the signature had been checked would be misleading (RFC 6960 §2.3, §4.1.2);
  ``tryLater`` when the signer (HSM) or the store fails; ``internalError`` when the response about
  to be signed fails :mod:`ocsp.lint` (never signed).
- Signed by the issuer's delegated signer (``ocsp-<issuer>``, certificate included), else the CA.

Pre-signing (RFC 5019 §2.2.2, §6): a nonce-less single-CertID request is answered from an
in-memory cache of signed responses keyed by the CertID DER (hash algorithm, issuer name and key
hashes, serial), bounded by ``cache_entries`` and ``cache_max_bytes`` (least recently asked for
evicted first). Nothing else of a request is kept: a minimal request is recognised by its framing
(:func:`ocsp.request.canonical_cert_id`) and answered without a parse; any other request is parsed
strictly first, so padding, extensions or signatures cannot grow memory. Entries are produced **lazily on the
first request** (concurrent first requests share one signature), **eagerly on revocation** (a feed
poll of the core's outbox every ``poll_seconds`` drops the serial's entries and re-signs them plus
the SHA-1 CertID form within about a second) and **refreshed in the background** once half their
validity has passed (idle entries are dropped instead). They are not produced at issuance: the
core offers no issuance hook and pre-signing 100k+ certificates per replica at start would cost
seconds of HSM time for responses most of which are never asked for.
A request with a nonce, or with several CertIDs, gets a freshly signed response with the status
read from the store when it is signed. The common case, one CertID with a nonce, is batched:
concurrent requests share one status query and one wake-up of the event loop, each gets its own
signature (:mod:`ocsp.batch_signer`).

Signing and store reads are blocking: they run in signing threads (every PKCS#11 call serialised
by the token's lock: the HSM session is not thread-safe) and a small reader pool, never on the
event loop.
thisUpdate is rounded down to ``bucket_seconds`` (revoked: not before the revocation second) and
producedAt equals it for pre-signed responses, so replicas give identical answers for identical
state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

from ca.model import RevocationReason
from ca.service.supervisor import service_share_dir
from ca.store.outbox_feed import OutboxFeed
from ca.store.status import StatusReader
from ocsp.batch_signer import Batcher
from ocsp.lint import LintError, lint_response_data
from ocsp.request import CertIdRequest, MalformedRequest, OcspRequest, canonical_cert_id, parse_request
from ocsp.responder_der import (
    GOOD,
    NOT_ISSUED,
    UNKNOWN,
    CertState,
    ResponseStatus,
    error_response,
    ocsp_response,
    response_data,
    single_response,
)
from ocsp.settings import OcspSettings
from ocsp.shared_presigned import SharedPresigned
from ocsp.signers import Signer, issuer_hashes, load_signer
from ocsp.signing import sign

log = logging.getLogger("ikepki.ocsp")
ROOT = "root"  # the root CA answers for the issuing CA certificates (signed with the root key)
SHA1_CERTID_ALG = bytes.fromhex("300906052b0e03021a0500")
FEED_BATCH = 5000
ENTRY_OVERHEAD = 400  # bytes per cache entry beyond the DER: Presigned, headers, dict slots, by_serial
SIGNER_RELOAD_SECONDS = 30.0


class Unavailable(Exception):
    """The signer or the store failed: answer tryLater (RFC 6960 §2.3)."""


@dataclass(slots=True)
class Presigned:
    """A signed response ready to serve, with its RFC 5019 §6.2 cache headers precomputed."""

    body: bytes
    issuer_id: str
    serial: int
    this_update: float
    next_update: float
    etag: bytes
    last_modified: bytes
    expires: bytes
    last_hit: float = field(default_factory=time.monotonic)

    def size(self, key: bytes) -> int:
        """Bytes this entry holds in the cache (for the ``cache_max_bytes`` bound)."""
        return len(self.body) + len(key) + len(self.etag) + len(self.last_modified) + len(self.expires) \
            + ENTRY_OVERHEAD

    def headers(self, now: float) -> list[tuple[bytes, bytes]]:
        max_age = max(0, int(self.next_update - now))
        return [(b"cache-control", b"max-age=%d, public, no-transform, must-revalidate" % max_age),
                (b"etag", self.etag), (b"last-modified", self.last_modified), (b"expires", self.expires)]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the HTTP edge sends: DER body plus extra headers (cache headers when pre-signed)."""

    body: bytes
    headers: list[tuple[bytes, bytes]]
    presigned: bool = False


NO_CACHE = [(b"cache-control", b"no-cache, no-store, max-age=0")]


def _http_date(ts: float) -> bytes:
    return formatdate(ts, usegmt=True).encode()


def cert_id_der(hash_alg_der: bytes, name_hash: bytes, key_hash: bytes, serial: int) -> bytes:
    from ocsp.der import der_integer, der_octets, der_seq

    return der_seq(hash_alg_der, der_octets(name_hash), der_octets(key_hash), der_integer(serial))


class Responder:
    """Status lookup, signing and the pre-signed cache for all issuing CAs of one deployment."""

    def __init__(self, dep: Any, settings: OcspSettings | None = None) -> None:
        self.dep = dep
        self.settings = settings or dep.settings_for(OcspSettings, "ocsp")
        self.validity = self.settings.validity_seconds
        self.bucket = self.settings.bucket_seconds
        self.issuer_by_hash: dict[tuple[str, bytes, bytes], str] = {}
        self.sha1_ids: dict[str, tuple[bytes, bytes]] = {}
        issuer_certs = {**{i: iss.certificate for i, iss in dep.issuers.items()}, ROOT: dep.root}
        self.ca_serials = {iss.certificate.serial_number for iss in dep.issuers.values()}
        for issuer_id, certificate in issuer_certs.items():
            for name, nh, kh in issuer_hashes(certificate):
                self.issuer_by_hash[(name, nh, kh)] = issuer_id
                if name == "sha1":
                    self.sha1_ids[issuer_id] = (nh, kh)
        self.signers: dict[str, Signer] = {}
        self._signers_loaded = 0.0
        self._sign_pool = ThreadPoolExecutor(1, thread_name_prefix="ocsp-sign")
        self._read_pool = ThreadPoolExecutor(4, thread_name_prefix="ocsp-read")
        self._shared = SharedPresigned(service_share_dir("ocsp-presigned"))  # with --workers N
        self._nonce_jobs: Batcher[tuple[Signer, CertIdRequest, bytes], bytes] = \
            Batcher(self._nonce_batch, name="ocsp-nonce")  # one CertID + nonce: batched status reads and signing
        self._status = StatusReader(dep.db)  # one raw store connection per thread (lookup)
        self.cache: dict[bytes, Presigned] = {}
        self.cache_bytes = 0
        self.by_serial: dict[tuple[str, int], set[bytes]] = {}
        self._inflight: dict[bytes, asyncio.Future[Presigned | None]] = {}
        self._changed: dict[tuple[str, int], int] = {}
        self._epoch = 0
        self._feed = OutboxFeed(FEED_BATCH)  # revocations committed out of id order too (ca/store/outbox_feed.py)
        self._pending_resign: list[tuple[str, int, bytes]] = []
        self._maintenance: asyncio.Task[None] | None = None
        self.stats = {"presigned_hits": 0, "signed": 0, "malformed": 0, "try_later": 0, "unauthorized": 0,
                      "lint_failed": 0}

    # -- entry point --------------------------------------------------------------------------

    async def respond(self, body: bytes) -> Answer:
        """The OCSPResponse for one request body (never raises)."""
        self.ensure_maintenance()
        cid_key = canonical_cert_id(body)
        if cid_key is not None:
            entry = self.cache.get(cid_key)
            now = time.time()
            if entry is not None and now < entry.next_update:
                entry.last_hit = time.monotonic()
                self.stats["presigned_hits"] += 1
                return Answer(entry.body, entry.headers(now), True)
        try:
            request = parse_request(body, self.settings.max_requests)
        except MalformedRequest:
            self.stats["malformed"] += 1
            return Answer(error_response(ResponseStatus.malformedRequest), NO_CACHE)
        return await self.answer(request)

    async def answer(self, request: OcspRequest) -> Answer:
        issuers = {self.issuer_by_hash.get((c.hash_name, c.name_hash, c.key_hash)) for c in request.cert_ids}
        if request.signed or None in issuers or len(issuers) != 1:
            self.stats["unauthorized"] += 1
            return Answer(error_response(ResponseStatus.unauthorized), NO_CACHE)
        issuer_id = next(iter(issuers))
        assert issuer_id is not None
        try:
            if request.nonce_ext_value is None and len(request.cert_ids) == 1:
                cid = request.cert_ids[0]
                entry = await self.presigned(issuer_id, cid)
                if entry is not None:
                    now = time.time()
                    return Answer(entry.body, entry.headers(now), True)
            if request.nonce_ext_value is not None and len(request.cert_ids) == 1:
                der = await self._nonce_response(issuer_id, request.cert_ids[0], request.nonce_ext_value)
                return Answer(der, NO_CACHE)
            der = await self._signed_now(issuer_id, request.cert_ids, request.nonce_ext_value)
            return Answer(der, NO_CACHE)
        except Unavailable as exc:
            self.stats["try_later"] += 1
            log.warning("OCSP tryLater: %s", exc)
            return Answer(error_response(ResponseStatus.tryLater), NO_CACHE)
        except LintError as exc:
            self.stats["lint_failed"] += 1
            log.error("OCSP response not signed: %s", exc)
            return Answer(error_response(ResponseStatus.internalError), NO_CACHE)

    # -- pre-signed cache ---------------------------------------------------------------------

    async def presigned(self, issuer_id: str, cid: CertIdRequest) -> Presigned | None:
        entry = self.cache.get(cid.der)
        if entry is not None and time.time() < entry.next_update:
            entry.last_hit = time.monotonic()
            self.stats["presigned_hits"] += 1
            return entry
        pending = self._inflight.get(cid.der)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Presigned | None] = asyncio.get_running_loop().create_future()
        self._inflight[cid.der] = fut
        try:
            result = await self._presign(issuer_id, cid.der, cid.serial)
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[cid.der]

    async def _presign(self, issuer_id: str, cid_der: bytes, serial: int) -> Presigned | None:
        if self._feed.cursor is None:  # the feed must start before the first status read we cache
            await asyncio.get_running_loop().run_in_executor(self._read_pool, self._read_feed)
        epoch = self._epoch
        state = (await self._states(issuer_id, [serial]))[0]
        signer = await self._signer(issuer_id)
        now = self.dep.clock.now()
        this_update = self._this_update(now, state)
        next_update = min(this_update + timedelta(seconds=self.validity), signer.not_after)
        der = await self._run_sign(signer, [(cid_der, state)], this_update, next_update, this_update, None,
                                   shared=True)
        entry = Presigned(der, issuer_id, serial, this_update.timestamp(), next_update.timestamp(),
                          b'"' + hashlib.sha256(der).hexdigest()[:32].encode() + b'"',
                          _http_date(this_update.timestamp()), _http_date(next_update.timestamp()))
        if self._changed.get((issuer_id, serial), -1) >= epoch:
            return entry  # the status changed while we signed: serve once, do not cache
        self._store(cid_der, entry)
        return entry

    def _store(self, cid_der: bytes, entry: Presigned) -> None:
        self._drop_key(cid_der)
        size = entry.size(cid_der)
        if len(self.cache) >= self.settings.cache_entries or self.cache_bytes + size > self.settings.cache_max_bytes:
            self._evict(len(self.cache) // 10 or 1, size)
        self.cache[cid_der] = entry
        self.cache_bytes += size
        self.by_serial.setdefault((entry.issuer_id, entry.serial), set()).add(cid_der)

    def _evict(self, n: int, room: int = 0) -> None:
        """Drop the ``n`` least recently asked-for entries, more if ``room`` bytes do not fit yet."""
        for i, key in enumerate(sorted(self.cache, key=lambda k: self.cache[k].last_hit)):
            if i >= n and self.cache_bytes + room <= self.settings.cache_max_bytes:
                break
            self._drop_key(key)

    def _drop_key(self, key: bytes) -> None:
        entry = self.cache.pop(key, None)
        if entry is not None:
            self.cache_bytes -= entry.size(key)
            keys = self.by_serial.get((entry.issuer_id, entry.serial))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_serial[(entry.issuer_id, entry.serial)]

    def _this_update(self, now: datetime, state: CertState) -> datetime:
        ts = int(now.timestamp()) // self.bucket * self.bucket
        bucketed = datetime.fromtimestamp(ts, UTC)
        if state.kind == "revoked" and state.revoked_at is not None and state.revoked_at > bucketed:
            return min(state.revoked_at.replace(microsecond=0), now.replace(microsecond=0))
        return bucketed

    # -- nonce fast path ----------------------------------------------------------------------

    async def _nonce_response(self, issuer_id: str, cid: CertIdRequest, nonce: bytes) -> bytes:
        """One CertID with an RFC 8954 nonce (what strongSwan and ``openssl ocsp -nonce`` send): a
        fresh response, status read from the store at signing time as on the generic path, but
        worked off in batches (:meth:`_nonce_batch`) instead of one thread hop per request."""
        signer = await self._signer(issuer_id)
        try:
            der = await self._nonce_jobs.submit((signer, cid, nonce))
        except LintError:
            raise
        except Exception as exc:
            raise Unavailable(f"store or signer for {issuer_id} failed: {exc}") from None
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
            states.update(zip(((issuer_id, s) for s in unique), self.lookup(issuer_id, unique), strict=True))
        now = self.dep.clock.now().replace(microsecond=0)
        out: list[bytes | BaseException] = []
        for signer, cid, nonce in jobs:
            try:
                state = states[(signer.issuer_id, cid.serial)]
                next_update = min(now + timedelta(seconds=self.validity), signer.not_after)
                tbs = response_data(signer.key_hash, now, [single_response(cid.der, state, now, next_update)], nonce,
                                    state is NOT_ISSUED)
                lint_response_data(tbs)
                out.append(ocsp_response(tbs, signer.alg_id, sign(signer.key, tbs), signer.certs_der))
            except Exception as exc:
                out.append(exc)
        return out

    # -- signing ------------------------------------------------------------------------------

    async def _signed_now(self, issuer_id: str, cert_ids: Iterable[CertIdRequest], nonce: bytes | None) -> bytes:
        """A fresh response (nonce or several CertIDs): status read and signature in one hop to the
        signing thread."""
        signer = await self._signer(issuer_id)
        loop = asyncio.get_running_loop()
        try:
            der = await loop.run_in_executor(self._sign_pool, self._answer_now, signer, issuer_id, list(cert_ids),
                                             nonce)
        except LintError:
            raise
        except Exception as exc:
            raise Unavailable(f"store or signer for {issuer_id} failed: {exc}") from None
        self.stats["signed"] += 1
        return der

    def _answer_now(self, signer: Signer, issuer_id: str, cert_ids: list[CertIdRequest], nonce: bytes | None) -> bytes:
        states = self.lookup(issuer_id, [c.serial for c in cert_ids])
        now = self.dep.clock.now().replace(microsecond=0)
        next_update = min(now + timedelta(seconds=self.validity), signer.not_after)
        items = [(c.der, st) for c, st in zip(cert_ids, states, strict=True)]
        singles = [single_response(der, st, now, next_update) for der, st in items]
        tbs = response_data(signer.key_hash, now, singles, nonce, any(st is NOT_ISSUED for _, st in items))
        lint_response_data(tbs)
        return ocsp_response(tbs, signer.alg_id, sign(signer.key, tbs), signer.certs_der)

    async def _run_sign(self, signer: Signer, items: list[tuple[bytes, CertState]], this_update: datetime,
                        next_update: datetime, produced_at: datetime, nonce: bytes | None,
                        shared: bool = False) -> bytes:
        """Sign one response. ``shared`` (pre-signed responses): take the bytes another worker
        already signed for the same ResponseData, else publish ours (ocsp/shared_presigned.py)."""
        extended = any(s is NOT_ISSUED for _, s in items)
        singles = [single_response(der, s, this_update, next_update) for der, s in items]
        tbs = response_data(signer.key_hash, produced_at, singles, nonce, extended)
        lint_response_data(tbs)
        loop = asyncio.get_running_loop()
        key = self._shared.key(tbs, signer.alg_id, signer.certs_der) if shared and self._shared.dir else None
        if key is not None:
            found = await loop.run_in_executor(self._read_pool, self._shared.get, key)
            if found is not None:
                return found
        try:
            signature = await loop.run_in_executor(self._sign_pool, sign, signer.key, tbs)
        except Exception as exc:
            raise Unavailable(f"signer for {signer.issuer_id} failed: {exc}") from None
        self.stats["signed"] += 1
        der = ocsp_response(tbs, signer.alg_id, signature, signer.certs_der)
        if key is not None:
            der = await loop.run_in_executor(self._read_pool, self._shared.publish, key, der)
        return der

    async def _signer(self, issuer_id: str) -> Signer:
        signer = self.signers.get(issuer_id)
        if signer is None or time.monotonic() - self._signers_loaded > SIGNER_RELOAD_SECONDS:
            try:
                await asyncio.get_running_loop().run_in_executor(self._sign_pool, self.reload_signers)
            except Exception as exc:
                if issuer_id not in self.signers:
                    raise Unavailable(f"OCSP signer for {issuer_id}: {exc}") from None
                log.warning("could not reload OCSP signers: %s", exc)
            signer = self.signers[issuer_id]
        return signer

    def reload_signers(self) -> None:
        """(Re)load every issuer's signer: picks up certificates rotated by another replica."""
        failures = []
        for issuer_id in [*self.dep.issuers, ROOT]:
            try:
                signer = load_signer(self.dep, issuer_id)
            except Exception as exc:  # e.g. an offline root key: the others still answer
                failures.append(f"{issuer_id}: {exc}")
                continue
            old = self.signers.get(issuer_id)
            if old is not None and old.certificate != signer.certificate:
                log.info("OCSP signer for %s now %x", issuer_id, signer.certificate.serial_number)
            self.signers[issuer_id] = signer
        self._signers_loaded = time.monotonic()
        if failures:
            raise RuntimeError("; ".join(failures))

    # -- status -------------------------------------------------------------------------------

    async def _states(self, issuer_id: str, serials: list[int]) -> list[CertState]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_pool, self.lookup, issuer_id, serials)
        except Exception as exc:
            raise Unavailable(f"store: {exc}") from None

    def lookup(self, issuer_id: str, serials: list[int]) -> list[CertState]:
        """The status of each serial under ``issuer_id`` from the store (blocking). Under the root CA:
        the issuing CA certificates (good; CA revocation is not recorded in the store).

        :class:`ca.store.status.StatusReader` keeps a raw DB-API connection per thread: this runs for
        every nonce request, and a pooled SQLAlchemy round trip costs several times the query itself."""
        if issuer_id == ROOT:
            return [GOOD if s in self.ca_serials else self._state(None, ROOT) for s in serials]
        rows = self._status.statuses(serials)
        return [self._state(rows.get(s), issuer_id) for s in serials]

    def _state(self, row: Any, issuer_id: str) -> CertState:
        if row is None or row.issuer_id != issuer_id:
            return NOT_ISSUED if self.settings.non_issued == "revoked" else UNKNOWN
        if row.status == "valid":
            return GOOD
        reason = RevocationReason[row.revocation_reason].value if row.revocation_reason else None
        return CertState("revoked", row.revoked_at, reason)

    # -- maintenance: revocation feed, refresh, signer reload ---------------------------------

    def ensure_maintenance(self) -> None:
        """Start the maintenance loop once, in whatever event loop serves requests."""
        if self._maintenance is None or self._maintenance.done():
            try:
                self._maintenance = asyncio.get_running_loop().create_task(self._maintain(), name="ocsp-maintain")
            except RuntimeError:
                return

    async def _maintain(self) -> None:
        last_refresh = 0.0
        while True:
            try:
                await self.poll_feed()
                if time.monotonic() - last_refresh > max(self.validity / 20, 5):
                    last_refresh = time.monotonic()
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving; the next round retries
                log.warning("OCSP maintenance: %s", exc)
            await asyncio.sleep(self.settings.poll_seconds)

    async def poll_feed(self) -> int:
        """Apply revocations/releases recorded since the last poll; returns how many."""
        loop = asyncio.get_running_loop()
        changes = await loop.run_in_executor(self._read_pool, self._read_feed)
        if not changes:
            return 0
        self._epoch += 1
        resign: set[tuple[str, int]] = set()
        for issuer_id, serial in changes:
            key = (issuer_id, serial)
            self._changed[key] = self._epoch
            keys = self.by_serial.get(key, set()).copy()
            for k in keys:
                self._drop_key(k)
            resign.add(key)
            for k in keys:
                self._pending_resign.append((issuer_id, serial, k))
        for issuer_id, serial in resign:
            if issuer_id in self.sha1_ids:
                nh, kh = self.sha1_ids[issuer_id]
                self._pending_resign.append((issuer_id, serial, cert_id_der(SHA1_CERTID_ALG, nh, kh, serial)))
        if len(self._changed) > 100_000:
            self._changed = {k: v for k, v in self._changed.items() if v >= self._epoch - 100}
        await self._drain_resign()
        return len(changes)

    async def _drain_resign(self) -> None:
        pending, self._pending_resign = self._pending_resign, []
        seen: set[bytes] = set()
        for issuer_id, serial, key in pending:
            if key in seen:
                continue
            seen.add(key)
            try:
                entry = await self._presign(issuer_id, key, serial)
                del entry
            except Unavailable as exc:
                log.warning("re-signing after revocation failed: %s", exc)

    def _read_feed(self) -> list[tuple[str, int]]:
        with self.dep.db.read() as conn:
            rows = self._feed.read(conn)
        return [(r.issuer_id, int(r.serial, 16)) for r in rows]

    async def refresh(self) -> int:
        """Re-sign cached entries past half their validity; drop those not asked for since (and
        shared responses older than their validity)."""
        if self._shared.dir is not None:
            await asyncio.get_running_loop().run_in_executor(self._read_pool, self._shared.expire,
                                                             self.validity + 60)
        now = time.time()
        idle_limit = time.monotonic() - self.validity
        due = []
        for key, entry in list(self.cache.items()):
            if now < entry.this_update + (entry.next_update - entry.this_update) / 2:
                continue
            if entry.last_hit < idle_limit:
                self._drop_key(key)
            else:
                due.append((key, entry))
        for key, entry in due:
            try:
                await self._presign(entry.issuer_id, key, entry.serial)
            except Unavailable as exc:
                log.warning("pre-sign refresh failed: %s", exc)
                break
        return len(due)

    def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
        self._sign_pool.shutdown(wait=False)
        self._nonce_jobs.close()
        self._read_pool.shutdown(wait=False)
