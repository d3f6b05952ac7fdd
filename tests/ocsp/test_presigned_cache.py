"""The pre-signed response cache (ocsp/presigned_cache.py): least recently asked-for evicted first,
both bounds (entries, bytes) held after any sequence of operations, and the byte bound a true
bound on the memory the cache holds (its per-entry overhead measured, not guessed)."""

from __future__ import annotations

import gc
import hashlib
import os
import time
import tracemalloc

from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsp.presigned_cache import Presigned, PresignedCache, http_date
from ocsp.responder import Responder
from ocsp.settings import OcspSettings
from tests.ocsp.ocsp_helpers import Pki
from tests.ocsp.test_bad_input import our_cert_id
from tests.ocsp.test_request_content import request, run

NOW = time.time()


def entry(serial: int, body: bytes = b"r" * 100, issuer_id: str = "ec", valid: float = 3600) -> Presigned:
    return Presigned(body, issuer_id, serial, NOW, NOW + valid, b'"' + os.urandom(16).hex().encode() + b'"',
                     http_date(NOW), http_date(NOW + valid))


def key(serial: int, form: int = 0) -> bytes:
    return bytes([form]) * 40 + serial.to_bytes(9, "big")


def check_invariants(cache: PresignedCache) -> None:
    assert len(cache) <= cache.max_entries and cache.bytes <= cache.max_bytes
    assert cache.bytes == sum(e.size(k) for k, e in cache.items())
    indexed = [(index, k) for index, keys in cache.by_serial.items() for k in keys]
    assert len(indexed) == len(cache) == len({k for _, k in indexed})
    for (issuer_id, serial), k in indexed:
        assert cache.entries[k].issuer_id == issuer_id and cache.entries[k].serial == serial


def test_the_least_recently_asked_for_is_evicted_first() -> None:
    cache = PresignedCache(max_entries=3, max_bytes=1 << 20)
    for s in (1, 2, 3):
        cache.put(key(s), entry(s))
    assert cache.fresh(key(1), NOW) is not None  # 1 asked for again: 2 is now the oldest
    cache.put(key(4), entry(4))
    assert [k for k, _ in cache.items()] == [key(3), key(1), key(4)] and cache.evicted == 1
    check_invariants(cache)


def test_bytes_bound_evicts_as_many_as_needed() -> None:
    small = entry(1)
    size = small.size(key(1))
    cache = PresignedCache(max_entries=1000, max_bytes=size * 3)
    for s in (1, 2, 3):
        cache.put(key(s), entry(s))
    big = entry(9, body=b"b" * (size + len(small.body)))  # takes the room of exactly two small ones
    assert big.size(key(9)) == 2 * size
    cache.put(key(9), big)
    assert [k for k, _ in cache.items()] == [key(3), key(9)] and cache.evicted == 2
    check_invariants(cache)


def test_expired_entries_are_not_served_and_replacing_keeps_the_count() -> None:
    cache = PresignedCache(max_entries=10, max_bytes=1 << 20)
    cache.put(key(1), entry(1, valid=10))
    assert cache.fresh(key(1), NOW + 9) is not None and cache.fresh(key(1), NOW + 10) is None
    cache.put(key(1), entry(1))
    assert len(cache) == 1
    check_invariants(cache)


def test_drop_serial_drops_every_certid_form() -> None:
    cache = PresignedCache(max_entries=10, max_bytes=1 << 20)
    for form in range(3):
        cache.put(key(7, form), entry(7))
    cache.put(key(8), entry(8))
    cache.put(key(7), entry(7, issuer_id="rsa"))  # same CertID bytes, re-signed under another issuer
    assert sorted(cache.drop_serial("ec", 7)) == [key(7, 1), key(7, 2)]
    assert sorted(cache.drop_serial("rsa", 7)) == [key(7)] and [k for k, _ in cache.items()] == [key(8)]
    check_invariants(cache)


OPS = st.lists(st.tuples(st.sampled_from(["put", "hit", "drop", "drop_serial"]), st.integers(0, 30),
                         st.integers(0, 2), st.integers(0, 3000)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 20), st.integers(3000, 30000))
def test_any_sequence_keeps_both_bounds_and_the_index(ops: list[tuple[str, int, int, int]], max_entries: int,
                                                      max_bytes: int) -> None:
    cache = PresignedCache(max_entries, max_bytes)
    for op, serial, form, size in ops:
        if op == "put":
            cache.put(key(serial, form), entry(serial, body=b"x" * size))
        elif op == "hit":
            cache.fresh(key(serial, form), NOW)
        elif op == "drop":
            cache.drop(key(serial, form))
        else:
            cache.drop_serial("ec", serial)
        check_invariants(cache)


def real_responses(pki: Pki, n: int = 1) -> list[tuple[bytes, Presigned]]:
    """Pre-signed responses as the responder produces them (delegated P-256 signer, its
    certificate included)."""
    responder = Responder(pki.dep, OcspSettings())
    try:
        run(responder, [request(our_cert_id(pki, 0x5EED + i)) for i in range(n)])
        return responder.cache.items()
    finally:
        responder.close()


def test_entries_share_their_signers_certificate_and_serve_the_whole_response(pki: Pki) -> None:
    (_, e1), (_, e2) = real_responses(pki, 2)
    assert e1.tail and e1.tail is e2.tail and e1.head + e1.tail == e1.body  # one certificate per signer
    assert {e1.serial, e2.serial} == {0x5EED, 0x5EEE}
    for e in (e1, e2):
        resp = ocsp.load_der_ocsp_response(e.body)
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and len(resp.certificates) == 1
        assert resp.serial_number == e.serial
        assert e.etag == b'"' + hashlib.sha256(e.body).hexdigest()[:32].encode() + b'"'


def test_the_byte_bound_covers_what_the_cache_really_holds(pki: Pki) -> None:
    """20,000 distinct entries shaped like a real response: the memory traced while filling the
    cache stays within what it counts against ``cache_max_bytes`` (so the bound is one)."""
    [(real_key, real)] = real_responses(pki)
    n = 20_000
    cache = PresignedCache(max_entries=n, max_bytes=1 << 40)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            serial = int.from_bytes(os.urandom(16), "big") | 1
            k = real_key[:-17] + serial.to_bytes(17, "big")  # distinct objects of the real sizes
            cache.put(k, Presigned(os.urandom(len(real.head)), "ec", serial, real.this_update, real.next_update,
                                   os.urandom(len(real.etag)), http_date(real.this_update),
                                   http_date(real.next_update), real.tail))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(cache) == n
    print(f"{n} entries, response {len(real.body)} bytes ({len(real.tail)} shared): holds {held} bytes, "
          f"counts {cache.bytes}")
    assert held <= cache.bytes, f"cache holds {held} bytes but counts {cache.bytes}"
    assert cache.bytes < 2 * held  # and the count is not so loose that the bound means little
