"""`openssl ocsp` (an independent client) against `ikepki serve`: POST and RFC 5019 GET, SHA-1 and
SHA-256 CertIDs, with and without nonce, verified through the delegated signer chain with
-CAfile root+issuer only."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ca.model import RevocationReason
from tests.ocsp.ocsp_helpers import Pki, openssl, wait_for

pytestmark = pytest.mark.interop


def query(pki: Pki, cert_path: Path, *extra: str, issuer: str = "ec", sha256: bool = False) -> str:
    args = ["ocsp", "-issuer", pki.issuer_pem(issuer), *(["-sha256"] if sha256 else []), "-cert", cert_path,
            "-url", f"{pki.url}/ocsp", "-CAfile", pki.chain(issuer), "-resp_text", *extra]
    out = openssl(*args)
    text = out.stdout + out.stderr
    assert "Response verify OK" in text, text
    return text


def status_of(text: str, cert_path: Path) -> str:
    m = re.search(rf"{re.escape(str(cert_path))}: (\w+)", text)
    assert m, text
    return m.group(1)


@pytest.mark.parametrize("sha256", [False, True], ids=["sha1-certid", "sha256-certid"])
@pytest.mark.parametrize("nonce", ["-nonce", "-no_nonce"])
def test_good(pki: Pki, sha256: bool, nonce: str) -> None:
    _, path = pki.issue()
    text = query(pki, path, nonce, sha256=sha256)
    assert status_of(text, path) == "good"
    assert ("Hash Algorithm: sha256" in text) == sha256
    assert "WARNING: no nonce" not in text  # a nonce is echoed; without one none is expected
    if nonce == "-nonce":
        assert "OCSP Nonce" in text
    else:
        assert "OCSP Nonce" not in text
    assert "OCSP Signing" in text and "OCSP No Check" in text  # the delegated signer's cert is included


def test_revoked_with_reason_and_unknown(pki: Pki) -> None:
    cert, path = pki.issue()
    assert status_of(query(pki, path, "-no_nonce"), path) == "good"  # cached as pre-signed "good"
    pki.revoke(cert, RevocationReason.keyCompromise)
    # the pre-signed "good" is replaced by the revocation feed within about a second
    text = wait_for(lambda: (t := query(pki, path, "-no_nonce")) and "revoked" in t and t, what="revoked")
    assert status_of(text, path) == "revoked"
    assert "Reason: keyCompromise" in text and "Revocation Time:" in text
    text = query(pki, path, "-nonce", sha256=True)
    assert status_of(text, path) == "revoked" and "Reason: keyCompromise" in text
    # a serial this CA never issued
    out = openssl("ocsp", "-issuer", pki.issuer_pem(), "-serial", "0x" + os.urandom(16).hex(), "-url",
                  f"{pki.url}/ocsp", "-CAfile", pki.chain(), "-nonce")
    assert "Response verify OK" in out.stderr + out.stdout and ": unknown" in out.stdout, out.stdout


def test_hold_then_release(pki: Pki) -> None:
    cert, path = pki.issue()
    pki.revoke(cert, RevocationReason.certificateHold)
    text = query(pki, path, "-nonce")
    assert status_of(text, path) == "revoked" and "Reason: certificateHold" in text
    pki.release(cert)
    wait_for(lambda: status_of(query(pki, path, "-no_nonce"), path) == "good", what="good after release")


@pytest.mark.parametrize("issuer", ["rsa", "attestation"])
def test_other_issuing_cas(pki: Pki, issuer: str) -> None:
    cert, path = pki.issue_from(issuer)
    assert status_of(query(pki, path, "-nonce", issuer=issuer), path) == "good"
    pki.revoke(cert, RevocationReason.superseded)
    text = query(pki, path, "-nonce", issuer=issuer, sha256=True)
    assert status_of(text, path) == "revoked" and "Reason: superseded" in text


def test_several_certids_in_one_request(pki: Pki) -> None:
    _, good_path = pki.issue()
    bad, bad_path = pki.issue()
    pki.revoke(bad, RevocationReason.cessationOfOperation)
    out = openssl("ocsp", "-issuer", pki.issuer_pem(), "-cert", good_path, "-cert", bad_path, "-url",
                  f"{pki.url}/ocsp", "-CAfile", pki.chain(), "-nonce")
    assert "Response verify OK" in out.stderr + out.stdout
    assert f"{good_path}: good" in out.stdout and f"{bad_path}: revoked" in out.stdout


def test_foreign_issuer_unauthorized(pki: Pki, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not ikepki")])
    now = datetime.now(UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(7).not_valid_before(now).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(True, None), True).sign(key, hashes.SHA256()))
    (tmp_path / "foreign.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    out = openssl("ocsp", "-issuer", tmp_path / "foreign.pem", "-serial", "0x1234", "-url", f"{pki.url}/ocsp",
                  "-no_nonce", check=False)
    assert "unauthorized (6)" in out.stdout + out.stderr


def _request_der(pki: Pki, cert_path: Path, tmp_path: Path) -> bytes:
    req = tmp_path / "req.der"
    openssl("ocsp", "-issuer", pki.issuer_pem(), "-cert", cert_path, "-no_nonce", "-reqout", req)
    return req.read_bytes()


@pytest.mark.parametrize("alphabet", ["standard", "urlsafe"])
def test_get_with_curl_and_cache_headers(pki: Pki, tmp_path: Path, alphabet: str) -> None:
    """RFC 5019 §5 GET through curl; the saved response is checked offline with `openssl ocsp -respin`."""
    _, path = pki.issue()
    der = _request_der(pki, path, tmp_path)
    b64 = (base64.b64encode(der).decode() if alphabet == "standard"
           else base64.urlsafe_b64encode(der).decode().rstrip("="))
    url = f"{pki.url}/ocsp/{urllib.parse.quote(b64, safe='')}"
    resp = tmp_path / "resp.der"
    out = subprocess.run(["curl", "-sS", "-D", str(tmp_path / "h.txt"), "-o", str(resp), url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    headers = (tmp_path / "h.txt").read_text().lower()
    assert "200" in headers.splitlines()[0] and "content-type: application/ocsp-response" in headers
    max_age = int(re.search(r"cache-control: max-age=(\d+)", headers).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= 3600
    for h in ("etag:", "last-modified:", "expires:", "public", "no-transform", "must-revalidate"):
        assert h in headers
    check = openssl("ocsp", "-respin", resp, "-issuer", pki.issuer_pem(), "-cert", path, "-CAfile", pki.chain())
    assert "Response verify OK" in check.stderr + check.stdout and f"{path}: good" in check.stdout
    # a conditional GET with the ETag is answered 304
    etag = re.search(r"^etag: (.+)$", headers, re.M).group(1).strip()  # type: ignore[union-attr]
    assert httpx.get(url, headers={"If-None-Match": etag}, timeout=10).status_code == 304


def test_presigned_response_is_cached_and_deterministic(pki: Pki, tmp_path: Path) -> None:
    """Two identical nonce-less requests get byte-identical pre-signed responses; thisUpdate is
    rounded (replicas with the same state agree)."""
    _, path = pki.issue()
    der = _request_der(pki, path, tmp_path)
    first = httpx.post(f"{pki.url}/ocsp", content=der, headers={"Content-Type": "application/ocsp-request"})
    second = httpx.post(f"{pki.url}/ocsp", content=der, headers={"Content-Type": "application/ocsp-request"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    parsed = ocsp.load_der_ocsp_response(first.content)
    assert parsed.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.this_update_utc.second == 0 and parsed.produced_at_utc == parsed.this_update_utc
    assert parsed.next_update_utc is not None


def test_root_answers_for_the_issuing_cas(pki: Pki) -> None:
    """The issuing CA certificates' status comes from the root CA key (strongSwan strict checks them)."""
    ca_path = pki.issuer_pem("rsa")
    out = openssl("ocsp", "-issuer", pki.root_pem(), "-cert", ca_path, "-url", f"{pki.url}/ocsp", "-CAfile",
                  pki.root_pem(), "-nonce")
    assert "Response verify OK" in out.stdout + out.stderr and f"{ca_path}: good" in out.stdout
    out = openssl("ocsp", "-issuer", pki.root_pem(), "-serial", "0x1234", "-url", f"{pki.url}/ocsp", "-CAfile",
                  pki.root_pem(), "-no_nonce")
    assert "Response verify OK" in out.stdout + out.stderr and ": unknown" in out.stdout
