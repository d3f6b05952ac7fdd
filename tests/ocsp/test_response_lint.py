"""OCSP responses are linted before they are signed (issue 21: "CRL and OCSP responses linted
before signing"). Every kind of response the responder builds passes; each broken field fails;
the responder answers internalError instead of signing a broken response (a revocation time in
year 1, which ``strftime('%Y')`` writes as a 12-character GeneralizedTime, is the motivating case
from defect 2)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.keys.signer import SigningKey
from ocsp.der import der_octets, der_oid, der_seq, der_tlv, explicit
from ocsp.lint import LintError, lint_response_data
from ocsp.responder import Responder
from ocsp.responder_der import GOOD, NOT_ISSUED, UNKNOWN, CertState, ocsp_response, response_data, single_response
from ocsp.settings import OcspSettings
from ocsp.signing import algorithm_identifier, sign
from ocsp.status_source import StatusSource
from tests.ocsp.ocsp_helpers import Pki
from tests.ocsp.test_bad_input import cert_id, our_cert_id
from tests.ocsp.test_request_content import request, run

KEY_HASH = b"\x01" * 20
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def tbs(state: CertState = GOOD, *, this: datetime = NOW, nxt: datetime = LATER, produced: datetime = NOW,
        nonce: bytes | None = None, extended: bool = False, key_hash: bytes = KEY_HASH) -> bytes:
    return response_data(key_hash, produced, [single_response(cert_id(5), state, this, nxt)], nonce, extended)


def test_what_the_responder_builds_passes() -> None:
    for state in (GOOD, UNKNOWN, CertState("revoked", NOW - timedelta(days=1), 1), CertState("revoked", NOW, None)):
        lint_response_data(tbs(state))
    lint_response_data(tbs(NOT_ISSUED, extended=True))
    lint_response_data(tbs(nonce=der_octets(os.urandom(32))))
    lint_response_data(tbs(nonce=os.urandom(16)))  # raw octets as older clients send them, echoed


@pytest.mark.parametrize(("name", "data"), [
    ("revocation in year 1", lambda: tbs(CertState("revoked", datetime(1, 1, 1, tzinfo=UTC), 1))),
    ("revocation after thisUpdate", lambda: tbs(CertState("revoked", LATER, 1))),
    ("reason 7 (unused)", lambda: tbs(CertState("revoked", NOW, 7))),
    ("nextUpdate before thisUpdate", lambda: tbs(nxt=NOW - timedelta(seconds=1))),
    ("nextUpdate equals thisUpdate", lambda: tbs(nxt=NOW)),
    ("thisUpdate after producedAt", lambda: tbs(this=NOW + timedelta(minutes=1), nxt=LATER + timedelta(hours=1))),
    ("nonce of 33 octets", lambda: tbs(nonce=der_octets(b"x" * 33))),
    ("empty nonce", lambda: tbs(nonce=b"")),
    ("19-octet key hash", lambda: tbs(key_hash=b"\x01" * 19)),
    ("unknown extension", lambda: der_seq(
        der_tlv(0xA2, der_octets(KEY_HASH)), der_tlv(0x18, b"20261206120000Z"),
        der_seq(single_response(cert_id(5), GOOD, NOW, LATER)),
        explicit(1, der_seq(der_seq(der_oid("1.2.3.4"), der_octets(b"x")))))),
    ("no SingleResponse", lambda: der_seq(der_tlv(0xA2, der_octets(KEY_HASH)), der_tlv(0x18, b"20261206120000Z"),
                                          der_seq())),
    ("fractional seconds", lambda: der_seq(der_tlv(0xA2, der_octets(KEY_HASH)), der_tlv(0x18, b"20261206120000.5Z"),
                                           der_seq(single_response(cert_id(5), GOOD, NOW, LATER)))),
    ("February 30", lambda: der_seq(der_tlv(0xA2, der_octets(KEY_HASH)), der_tlv(0x18, b"20260230120000Z"),
                                    der_seq(single_response(cert_id(5), GOOD, NOW, LATER)))),
    ("trailing data", lambda: tbs() + b"\x00"),
])
def test_broken_fields_fail(name: str, data: Any) -> None:
    with pytest.raises(LintError):
        lint_response_data(data())


class YearOneStatus(StatusSource):
    """The store answers a revocation time no certificate can have (as a corrupted row would)."""

    def lookup(self, issuer_id: str, serials: list[int]) -> list[CertState]:
        return [CertState("revoked", datetime(1, 1, 1, tzinfo=UTC), 1) for _ in serials]


def test_responder_refuses_to_sign_a_broken_response(pki: Pki) -> None:
    responder = Responder(pki.dep, OcspSettings(), YearOneStatus(pki.dep.db, ()))
    try:
        cid = our_cert_id(pki, int.from_bytes(os.urandom(16), "big") | 1)
        nonce_req = request(cid, exts=[der_seq(der_oid("1.3.6.1.5.5.7.48.1.2"), der_octets(der_octets(b"n" * 16)))])
        assert run(responder, [request(cid), nonce_req]) == [ocsp.OCSPResponseStatus.INTERNAL_ERROR] * 2
        assert responder.stats["lint_failed"] == 2 and responder.stats["signed"] == 0
    finally:
        responder.close()


# -- property: whatever valid state and times, lint passes and the signed result parses ---------

KEY = ec.generate_private_key(ec.SECP256R1())

times = st.datetimes(min_value=datetime(1951, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC))


@settings(max_examples=150, deadline=None)
@given(times, st.integers(1, 10**7), st.sampled_from(["good", "unknown", "revoked"]),
       st.one_of(st.none(), st.sampled_from(sorted({0, 1, 2, 3, 4, 5, 6, 8, 9, 10}))), st.integers(1, 10**6),
       st.one_of(st.none(), st.binary(min_size=1, max_size=32)))
def test_valid_inputs_pass_and_parse(this: datetime, validity: int, kind: str, reason: int | None, before: int,
                                     nonce: bytes | None) -> None:
    this = this.replace(microsecond=0)
    nxt = this + timedelta(seconds=validity)
    if nxt.year > 9999:
        return
    revoked_at = max(this - timedelta(seconds=before), datetime(1950, 1, 1, tzinfo=UTC))
    state = CertState("revoked", revoked_at, reason) if kind == "revoked" else CertState(kind)
    data = tbs(state, this=this, nxt=nxt, produced=this, nonce=der_octets(nonce) if nonce else None)
    lint_response_data(data)
    sk = SigningKey("software:test", KEY)
    parsed = ocsp.load_der_ocsp_response(ocsp_response(data, algorithm_identifier(sk), sign(sk, data), []))
    assert parsed.this_update_utc == this and parsed.next_update_utc == nxt
    assert parsed.certificate_status.name.lower() == kind
    KEY.public_key().verify(parsed.signature, parsed.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
