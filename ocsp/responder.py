"""The OCSP responder (RFC 6960, RFC 5019 profile, RFC 8954 nonce) for every ikepki issuing CA:
the request -> response path and the wiring of its parts.

Answers:
- For the issuing CAs' certificates too, under the root CA and signed by the root key (no AIA OCSP
  in the intermediates: relying parties configure the URL, e.g. strongSwan ``authorities``).
- Issuer matched by CertID issuerNameHash + issuerKeyHash (SHA-1, SHA-256, SHA-384, SHA-512).
- good / revoked (time, reason; holds as certificateHold) / unknown for serials ikepki never
  issued under that CA (``ocsp.non_issued: revoked`` answers revoked + certificateHold at the epoch
  with the extended-revoke extension instead, RFC 6960 §2.2; ``ocsp.non_issued: unauthorized``
  answers the unsigned ``unauthorized`` status, RFC 5019 §2.2.3): :mod:`ocsp.status_source`.
- ``unauthorized`` when a CertID names a CA that is not ours (or several of ours: one delegated
  signer cannot vouch for two CAs), and for a signed request (``optionalSignature``): this
  responder authorizes no requestor, and answering as if the signature had been checked would be
  misleading (RFC 6960 §2.3, §4.1.2);
  ``malformedRequest`` for anything unparsable, > ``max_requests`` CertIDs, or a nonce outside
  1..32 octets, an unknown critical extension or trailing data (:mod:`ocsp.request`);
  ``tryLater`` when the signer (HSM) or the store fails (PKIError UNAVAILABLE);
  ``internalError`` when the response about to be signed fails :mod:`ocsp.lint` (never signed).
- Signed by the issuer's delegated signer (``ocsp-<issuer>``, certificate included), else the CA
  (:class:`ocsp.signers.CurrentSigners`).

Which path a request takes:
1. A minimal single-CertID request without nonce is recognised by its framing alone
   (:func:`ocsp.request.canonical_cert_id`) and answered from the pre-signed cache
   (:mod:`ocsp.presigned_cache`) without a parse.
2. Anything else is parsed strictly first, so padding, extensions or signatures cannot grow memory.
   One CertID without nonce: pre-signed (:mod:`ocsp.presigner`, kept fresh and true by
   :mod:`ocsp.maintenance`). One CertID with a nonce, or several CertIDs: signed for this request
   with the status read when it is signed (:mod:`ocsp.fresh_responses`).

Signing and store reads are blocking: they run in one signing thread (every PKCS#11 call
serialised by the token's lock: the HSM session is not thread-safe) and a small reader pool, never
on the event loop.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ca.errors import ErrorKind, PKIError
from ca.ports import ServiceKeys
from ca.service.supervisor import service_share_dir
from ocsp.fresh_responses import FreshResponses
from ocsp.lint import LintError
from ocsp.maintenance import Maintenance
from ocsp.presigned_cache import PresignedCache
from ocsp.presigner import Presigner
from ocsp.request import MalformedRequest, OcspRequest, canonical_cert_id, parse_request
from ocsp.responder_der import ResponseStatus, error_response
from ocsp.settings import OcspSettings
from ocsp.shared_presigned import SharedPresigned
from ocsp.signers import ROOT, CurrentSigners, issuer_hashes
from ocsp.status_source import NotAuthoritative, StatusSource

log = logging.getLogger("ikepki.ocsp")
NO_CACHE = [(b"cache-control", b"no-cache, no-store, max-age=0")]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the HTTP edge sends: DER body plus extra headers (cache headers when pre-signed)."""

    body: bytes
    headers: list[tuple[bytes, bytes]]
    presigned: bool = False


class Responder:
    """Answers OCSP requests for all issuing CAs (and the root) of one deployment, in one process."""

    def __init__(self, dep: ServiceKeys, settings: OcspSettings | None = None,
                 status: StatusSource | None = None) -> None:
        self.settings = settings or dep.settings_for(OcspSettings, "ocsp")
        s = self.settings
        self.issuer_by_hash: dict[tuple[str, bytes, bytes], str] = {}
        sha1_ids: dict[str, tuple[bytes, bytes]] = {}
        for issuer_id, certificate in {**{i: iss.certificate for i, iss in dep.issuers.items()},
                                       ROOT: dep.root}.items():
            for name, nh, kh in issuer_hashes(certificate):
                self.issuer_by_hash[(name, nh, kh)] = issuer_id
                if name == "sha1":
                    sha1_ids[issuer_id] = (nh, kh)
        self.stats = {"presigned_hits": 0, "signed": 0, "malformed": 0, "try_later": 0, "unauthorized": 0,
                      "lint_failed": 0}
        self._sign_pool = ThreadPoolExecutor(1, thread_name_prefix="ocsp-sign")
        self._read_pool = ThreadPoolExecutor(4, thread_name_prefix="ocsp-read")
        self.status = status or StatusSource(dep.db, (i.certificate.serial_number for i in dep.issuers.values()),
                                             s.non_issued)
        self.signers = CurrentSigners(dep, self._sign_pool)
        self.cache = PresignedCache(s.cache_entries, s.cache_max_bytes)
        shared = SharedPresigned(service_share_dir("ocsp-presigned"), s.cache_max_bytes)  # with --workers N
        self.presigner = Presigner(self.cache, self.status, self.signers, dep.clock, s.validity_seconds,
                                   s.bucket_seconds, shared, self._sign_pool, self._read_pool, self.stats)
        self.fresh = FreshResponses(self.status, dep.clock, s.validity_seconds, self._sign_pool, self.stats)
        self.maintenance = Maintenance(self.status, self.presigner, self.cache, shared, sha1_ids,
                                       s.validity_seconds, s.poll_seconds, self._read_pool)

    async def respond(self, body: bytes) -> Answer:
        """The OCSPResponse for one request body (never raises)."""
        self.maintenance.ensure_started()
        cid_key = canonical_cert_id(body)
        if cid_key is not None:
            now = time.time()
            entry = self.cache.fresh(cid_key, now)
            if entry is not None:
                self.stats["presigned_hits"] += 1
                return Answer(entry.body, entry.headers(now), True)
        try:
            request = parse_request(body, self.settings.max_requests)
        except MalformedRequest:
            self.stats["malformed"] += 1
            return Answer(error_response(ResponseStatus.malformedRequest), NO_CACHE)
        return await self.answer(request)

    async def answer(self, request: OcspRequest) -> Answer:
        """The OCSPResponse for a parsed request."""
        issuers = {self.issuer_by_hash.get((c.hash_name, c.name_hash, c.key_hash)) for c in request.cert_ids}
        issuer_id = next(iter(issuers)) if len(issuers) == 1 else None
        if request.signed or issuer_id is None:
            self.stats["unauthorized"] += 1
            return Answer(error_response(ResponseStatus.unauthorized), NO_CACHE)
        try:
            if len(request.cert_ids) == 1 and request.nonce_ext_value is None:
                entry = await self.presigner.get(issuer_id, request.cert_ids[0])
                return Answer(entry.body, entry.headers(time.time()), True)
            signer = await self.signers.get(issuer_id)
            if len(request.cert_ids) == 1 and request.nonce_ext_value is not None:
                der = await self.fresh.with_nonce(signer, request.cert_ids[0], request.nonce_ext_value)
            else:
                der = await self.fresh.for_cert_ids(signer, request.cert_ids, request.nonce_ext_value)
            return Answer(der, NO_CACHE)
        except PKIError as exc:
            if exc.kind is not ErrorKind.UNAVAILABLE:
                raise
            self.stats["try_later"] += 1
            log.warning("OCSP tryLater: %s", exc)
            return Answer(error_response(ResponseStatus.tryLater), NO_CACHE)
        except NotAuthoritative:
            self.stats["unauthorized"] += 1
            return Answer(error_response(ResponseStatus.unauthorized), NO_CACHE)
        except LintError as exc:
            self.stats["lint_failed"] += 1
            log.error("OCSP response not signed: %s", exc)
            return Answer(error_response(ResponseStatus.internalError), NO_CACHE)

    def reload_signers(self) -> None:
        """(Re)load every issuer's signer now (blocking): after a rotation by this process."""
        self.signers.reload()

    def close(self) -> None:
        self.maintenance.cancel()
        self._sign_pool.shutdown(wait=False)
        self.fresh.close()
        self._read_pool.shutdown(wait=False)
