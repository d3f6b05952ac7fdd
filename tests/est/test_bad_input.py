"""Malformed and unauthorised requests: each a clear 4xx, nothing issued, nothing consumed.
Also the accepted encoding variants of RFC 7030 §4.2.1 / RFC 8951 §3."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.est.conftest import PIPELINE_PASSWORD, EstEnv, load_pem_cert
from tests.est.est_helpers import PKCS10, b64, enroll, issued_cert, make_csr, new_key

INTUNE = ("intune", PIPELINE_PASSWORD)


@pytest.fixture(scope="module")
def victim(est: EstEnv) -> tuple[str, str]:
    """A registered device whose secret every bad request uses: it must stay unconsumed."""
    return "bad-input-dev", est.register_one("bad-input-dev", ["DNS:bad-input-dev.example.test"])


@pytest.fixture
def nothing_changes(est: EstEnv, victim: tuple[str, str]) -> Iterator[None]:
    before = est.store.cert_count()
    yield
    assert est.store.cert_count() == before, "a bad request issued a certificate"
    assert est.store.registration(victim[0]) == (0, None), "a bad request consumed the secret"


def _csr() -> bytes:
    return make_csr(new_key(), "bad-input-dev", ["DNS:bad-input-dev.example.test"])


def _bad_signature() -> bytes:
    der = bytearray(_csr())
    der[-5] ^= 0x01
    return bytes(der)


def _weak_rsa() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(65537, 1024)
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bad-input-dev")]))
            .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))


@pytest.mark.parametrize(("name", "body", "status", "needle"), [
    ("garbage-base64", lambda: b"!!!this is not base64$$$", 400, "base64"),
    ("base64-of-noise", lambda: base64.b64encode(b"\x01\x02garbage" * 10), 400, "DER"),
    ("empty", lambda: b"", 400, "empty"),
    ("der-not-a-csr", lambda: b64(b"\x30\x03\x02\x01\x05"), 400, "PKCS#10"),
    ("certificate-not-csr", lambda: None, 400, "PKCS#10"),
    ("csr-bad-signature", lambda: b64(_bad_signature()), 400, "signature"),
    ("csr-rsa-1024", lambda: b64(_weak_rsa()), 400, "too weak"),
    ("oversized", lambda: b"A" * (64 * 1024), 413, "larger"),
])
def test_malformed_bodies(est: EstEnv, victim: tuple[str, str], nothing_changes: None, name: str, body: object,
                          status: int, needle: str) -> None:
    data = body() if callable(body) else body  # type: ignore[operator]
    if data is None:
        data = b64(load_pem_cert(Path(est.root)).public_bytes(Encoding.DER))
    with est.client() as c:
        r = enroll(c, est.url, b"", auth=victim, body=data)
    assert r.status_code == status, (name, r.status_code, r.text)
    assert needle.lower() in r.text.lower(), (name, r.text)
    assert r.headers["content-type"].startswith("text/plain")


def test_oversized_chunked_body_is_cut_off(est: EstEnv, victim: tuple[str, str], nothing_changes: None) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"A" * 4096

    with est.client() as c:
        r = c.post(f"{est.url}/.well-known/est/simpleenroll", content=chunks(), auth=victim,
                   headers={"Content-Type": PKCS10})
    assert r.status_code == 413


@pytest.mark.parametrize("ctype", [None, "application/json", "text/plain", "application/pkcs7-mime",
                                   "application/x-www-form-urlencoded"])
def test_wrong_content_type(est: EstEnv, victim: tuple[str, str], nothing_changes: None, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    with est.client() as c:
        r = c.post(f"{est.url}/.well-known/est/simpleenroll", content=b64(_csr()), auth=victim, headers=headers)
    assert r.status_code == 415 and "application/pkcs10" in r.text


def test_routing_and_auth_errors(est: EstEnv, victim: tuple[str, str], nothing_changes: None) -> None:
    with est.client() as c:
        assert enroll(c, est.url, _csr(), auth=victim, label="nosuchlabel").status_code == 404
        assert c.get(f"{est.url}/.well-known/est/fullcmc").status_code == 404
        assert c.get(f"{est.url}/.well-known/est/a/b/cacerts").status_code == 404
        r = c.get(f"{est.url}/.well-known/est/simpleenroll")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = enroll(c, est.url, _csr())
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="ikepki EST"'
        r = enroll(c, est.url, _csr(), headers={"Authorization": "Basic !!!"})
        assert r.status_code == 401
        r = enroll(c, est.url, _csr(), auth=(victim[0], victim[1] + "x"))
        assert r.status_code == 401 and "wrong" in r.text
        r = enroll(c, est.url, _csr(), auth=("no-such-device", "whatever"))
        assert r.status_code == 401
        r = enroll(c, est.url, _csr(), op="simplereenroll", auth=victim)
        assert r.status_code == 401 and "client certificate" in r.text


def test_expired_and_revoked_client_certs(est: EstEnv, tmp_path: Path) -> None:
    expiring, expiring_key = est.issue(tmp_path, "short-1", "short-1.example.test", label="shortlived")
    revoked, revoked_key = est.issue(tmp_path, "rev-1", "rev-1.example.test")
    est.revoke(load_pem_cert(revoked).serial_number)
    left = load_pem_cert(expiring).not_valid_after_utc.timestamp() - time.time()
    time.sleep(max(0.0, left) + 1.2)
    before = est.store.cert_count()
    with est.client(cert=(str(expiring), str(expiring_key))) as c:
        r = enroll(c, est.url, make_csr(new_key(), "short-1", ["DNS:short-1.example.test"]), op="simplereenroll")
    assert r.status_code == 403 and "expired" in r.text
    with est.client(cert=(str(revoked), str(revoked_key))) as c:
        r = enroll(c, est.url, make_csr(new_key(), "rev-1", ["DNS:rev-1.example.test"]), op="simplereenroll")
        assert r.status_code == 403 and "revoked" in r.text
        r = enroll(c, est.url, make_csr(new_key(), "rev-1", ["DNS:rev-1.example.test"]))
        assert r.status_code == 403 and "revoked" in r.text
    assert est.store.cert_count() == before


def _wrap76(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"\r\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + b"\r\n"


@pytest.mark.parametrize(("variant", "encode", "headers"), [
    ("single-line", b64, {}),
    ("wrapped-76-crlf", _wrap76, {"Content-Transfer-Encoding": "base64"}),
    ("cte-uppercase", b64, {"Content-Transfer-Encoding": "BASE64"}),
    ("cte-binary-but-base64", b64, {"Content-Transfer-Encoding": "binary"}),
    ("pem", lambda d: b"-----BEGIN CERTIFICATE REQUEST-----\n" + _wrap76(d) + b"-----END CERTIFICATE REQUEST-----\n",
     {}),
    ("raw-der", lambda d: d, {"Content-Transfer-Encoding": "binary"}),
    ("ctype-params", b64, {"Content-Type": "Application/PKCS10; charset=us-ascii"}),
])
def test_accepted_request_encodings(est: EstEnv, variant: str, encode: object, headers: dict[str, str]) -> None:
    csr = make_csr(new_key(), f"enc-{variant}", [f"DNS:enc-{variant}.example.test"])
    with est.client() as c:
        cert = issued_cert(enroll(c, est.url, csr, auth=INTUNE, body=encode(csr), headers=headers))  # type: ignore[operator]
    assert cert.subject.rfc4514_string() == f"CN=enc-{variant},O=Example"


@pytest.fixture(scope="module")
def fuzz_client(est: EstEnv) -> Iterator[httpx.Client]:
    with est.client() as c:
        yield c


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.binary(max_size=600), st.binary(max_size=300).map(base64.b64encode),
                      st.binary(max_size=300).map(lambda b: b"\x30\x82" + b),
                      st.integers(0, 400).flatmap(lambda i: st.binary(min_size=1, max_size=4).map(
                          lambda junk, i=i: _mutate(i, junk)))))
def test_fuzz_enroll_endpoint(est: EstEnv, victim: tuple[str, str], fuzz_client: httpx.Client, body: bytes) -> None:
    """Hypothesis through the live server: never a 5xx, never an issuance, never a consumed secret."""
    before = est.store.cert_count()
    r = enroll(fuzz_client, est.url, b"", auth=victim, body=body)
    assert r.status_code in (400, 413), (r.status_code, r.text)
    assert est.store.cert_count() == before
    assert est.store.registration(victim[0]) == (0, None)


_BASE_CSR = make_csr(new_key(), "bad-input-dev", ["DNS:bad-input-dev.example.test"])


def _mutate(index: int, junk: bytes) -> bytes:
    der = bytearray(_BASE_CSR)
    i = index % len(der)
    der[i:i + len(junk)] = bytes(b ^ 0xFF for b in junk) if der[i:i + len(junk)] == junk else junk
    return base64.b64encode(bytes(der))
