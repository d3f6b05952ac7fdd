"""SCEP protocol behaviour over HTTP against `ikepki serve`: challenge passwords (one-time,
webhook), manual approval with CertPoll, GetCert/GetCRL/GetNextCACert, and bad input that must
get a protocol-correct failure (or HTTP 400 when it is not SCEP), never a 5xx, nothing stored."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca.errors import PKIError
from ca.model import Requester as ModelRequester
from ca.model import RevocationReason, RevocationRequest
from enrollment.scep.service import RSA_ISSUER, ScepService
from enrollment.scep.settings import ScepSettings
from tests.conftest import run_ikepki
from tests.scep.conftest import WEBHOOK_YES, ScepEnv
from tests.scep.pyclient import (
    CertRep,
    Requester,
    ScepHttp,
    issuer_and_serial,
    issuer_and_subject,
    make_csr,
    read_certrep,
    read_degenerate,
    same_key,
    self_signed,
    verify_signed_data,
)

SUCCESS, FAILURE, PENDING = "0", "2", "3"
BAD_ALG, BAD_MESSAGE_CHECK, BAD_REQUEST, BAD_TIME, BAD_CERT_ID = "0", "1", "2", "3", "4"


@pytest.fixture(scope="module")
def http(scep: ScepEnv) -> ScepHttp:
    return ScepHttp(scep.url)


@pytest.fixture(scope="module")
def ra(http: ScepHttp) -> x509.Certificate:
    return http.ra()


def otp(scep: ScepEnv, profile: str = "machine") -> str:
    """A one-time password from the admin API (the CLI path is used by the micromdm test)."""
    srv = scep.server
    with httpx.Client(verify=ssl.create_default_context(cafile=str(srv.root_pem)), timeout=30) as client:
        r = client.post(f"{srv.https_url}/admin/v1/scep/challenges", json={"profile": profile},
                        headers={"authorization": f"Bearer {srv.admin_token()}"})
    assert r.status_code == 201, r.text
    return str(r.json()["challenge"])


def enroll(http: ScepHttp, ra: x509.Certificate, password: str | None, cn: str, *, url: str | None = None,
           requester: Requester | None = None, **kw: object) -> tuple[CertRep, Requester]:
    req = requester or Requester.new()
    body = req.message("19", make_csr(req.key, cn, password, (cn,)), ra, **kw)  # type: ignore[arg-type]
    client = ScepHttp(url, http.client) if url else http
    r = client.post(body)
    assert r.status_code == 200, r.text
    rep = read_certrep(r.content, req)
    assert rep.transaction_id == req.transaction_id  # RFC 8894 §3.2.1.1: echoed
    assert rep.recipient_nonce == req.last_nonce  # §3.2.1.5: recipientNonce = the request's senderNonce
    assert rep.signer.serial_number == ra.serial_number
    return rep, req


def test_caps_and_ca_certs(http: ScepHttp, scep: ScepEnv) -> None:
    caps = http.get("GetCACaps").text.split()
    for cap in ("POSTPKIOperation", "SHA-256", "SHA-512", "SHA-384", "AES", "DES3", "Renewal", "SCEPStandard",
                "GetNextCACert"):
        assert cap in caps
    r = http.get("GetCACert")
    assert r.headers["content-type"] == "application/x-x509-ca-ra-cert"
    default = read_degenerate(r.content)  # this server has include_root: false (tests/scep/conftest.py)
    names = [c.subject.rfc4514_string() for c in default]
    assert len(names) == 2 and any("SCEP RA" in n for n in names) and any("RSA1" in n for n in names)
    assert all(isinstance(c.public_key(), rsa.RSAPublicKey) for c in default)
    srv = scep.server  # mounted on the HTTPS listener too
    with httpx.Client(verify=ssl.create_default_context(cafile=str(srv.root_pem)), timeout=30) as tls:
        assert tls.get(f"{srv.https_url}/scep", params={"operation": "GetCACaps"}).text.split() == caps
    rsa_only = read_degenerate(http.get("GetCACert", "rsa-only").content)
    assert len(rsa_only) == 2 and all(isinstance(c.public_key(), rsa.RSAPublicKey) for c in rsa_only)


def test_get_next_ca_cert_is_signed_by_the_ra(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    r = http.get("GetNextCACert")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-x509-next-ca-cert"
    signer, content = verify_signed_data(r.content)
    assert signer.serial_number == ra.serial_number
    staged = x509.load_pem_x509_certificate(scep.staged.read_bytes())
    assert read_degenerate(content) == [staged]


def test_one_time_password_is_single_use(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    password = otp(scep)
    before = scep.counts()
    rep, req = enroll(http, ra, password, "otp1.example.test")
    assert rep.status == SUCCESS, rep
    leaf = rep.certificates[0]
    assert same_key(leaf, req.key)
    assert scep.counts()[0] == before[0] + 1
    reused, _ = enroll(http, ra, password, "otp2.example.test")
    assert (reused.status, reused.fail_info) == (FAILURE, BAD_REQUEST)
    wrong, _ = enroll(http, ra, "no-such-password", "otp3.example.test")
    assert (wrong.status, wrong.fail_info) == (FAILURE, BAD_REQUEST)
    missing, _ = enroll(http, ra, None, "otp4.example.test")
    assert (missing.status, missing.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep.counts()[0] == before[0] + 1


def test_one_time_password_is_bound_to_its_profile(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    password = otp(scep, "gateway")
    before = scep.counts()
    rep, _ = enroll(http, ra, password, "wrongprofile.example.test")  # /scep serves machine
    assert (rep.status, rep.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep.counts() == before


def test_retransmitted_request_gets_the_same_certificate(http: ScepHttp, ra: x509.Certificate,
                                                         scep: ScepEnv) -> None:
    req = Requester.new()
    body = req.message("19", make_csr(req.key, "again.example.test", otp(scep), ("again.example.test",)), ra)
    first = read_certrep(http.post(body).content, req)
    second = read_certrep(http.post(body).content, req)
    assert first.status == second.status == SUCCESS
    assert first.certificates[0].serial_number == second.certificates[0].serial_number


def test_webhook_allows_and_denies(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    url = f"{scep.url}/user"
    before = scep.counts()
    req = Requester.new()
    csr = make_csr(req.key, "alice@example.test", WEBHOOK_YES)
    rep = read_certrep(ScepHttp(url, http.client).post(req.message("19", csr, ra)).content, req)
    assert rep.status == SUCCESS, rep
    sans = rep.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["alice@example.test"]
    call = scep.webhook.calls[-1]
    assert call["transaction_id"] == req.transaction_id and call["profile"] == "user"
    assert call["sans"] == ["email:alice@example.test"]

    req2 = Requester.new()
    denied = read_certrep(ScepHttp(url, http.client).post(
        req2.message("19", make_csr(req2.key, "mallory@example.test", "webhook-no"), ra)).content, req2)
    assert (denied.status, denied.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep.counts()[0] == before[0] + 1


def test_webhook_down_fails_closed(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    before = scep.counts()
    scep.webhook.stop()
    try:
        req = Requester.new()
        rep = read_certrep(ScepHttp(f"{scep.url}/user", http.client).post(
            req.message("19", make_csr(req.key, "bob@example.test", WEBHOOK_YES), ra)).content, req)
    finally:
        scep.webhook.start()
    assert (rep.status, rep.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep.counts() == before
    assert "webhook unreachable" in scep.server.log.read_text()


def test_manual_approval_with_cert_poll(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv,
                                        deployment: Any) -> None:
    url = f"{scep.url}/gateway/pkiclient.exe"
    rep, req = enroll(http, ra, otp(scep, "gateway"), "gw1.example.test", url=url)
    assert rep.status == PENDING
    rsa_ca = x509.load_pem_x509_certificate((scep.server.dir / "ca" / "rsa.pem").read_bytes())
    poll_body = issuer_and_subject(rsa_ca.subject, x509.Name.from_rfc4514_string("CN=gw1.example.test,O=Example"))
    poll = read_certrep(ScepHttp(url, http.client).post(req.message("20", poll_body, ra)).content, req)
    assert poll.status == PENDING
    service = ScepService(deployment, ScepSettings())
    assert req.transaction_id in [t.transaction_id for t in service.repo.pending()]
    run_ikepki("scep", "approve", req.transaction_id, directory=scep.server.dir)
    done = read_certrep(ScepHttp(url, http.client).post(req.message("20", poll_body, ra)).content, req)
    assert done.status == SUCCESS
    assert same_key(done.certificates[0], req.key)

    rep2, req2 = enroll(http, ra, otp(scep, "gateway"), "gw2.example.test", url=url)
    assert rep2.status == PENDING
    (row,) = service.repo.get(req2.transaction_id)
    service.reject(row.id, "scep-tests")
    with pytest.raises(PKIError):  # no longer pending
        service.approve(row.id, "scep-tests")
    refused = read_certrep(ScepHttp(url, http.client).post(req2.message("20", poll_body, ra)).content, req2)
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)


def test_get_cert_get_crl_and_poll_for_unknown(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv,
                                               deployment: Any) -> None:
    rep, req = enroll(http, ra, otp(scep), "getcert.example.test")
    leaf = rep.certificates[0]
    got = read_certrep(http.post(req.message("21", issuer_and_serial(leaf.issuer, leaf.serial_number), ra)).content,
                       req)
    assert got.status == SUCCESS and got.certificates[0] == leaf
    unknown = read_certrep(http.post(req.message("21", issuer_and_serial(leaf.issuer, 12345), ra)).content, req)
    assert (unknown.status, unknown.fail_info) == (FAILURE, BAD_CERT_ID)
    # GetCRL (RFC 8894 §3.3.3): the CRL published at the RSA CA's distribution point, enveloped to us
    crl_rep = read_certrep(http.post(req.message("22", issuer_and_serial(leaf.issuer, leaf.serial_number), ra)).content,
                           req)
    assert crl_rep.status == SUCCESS and len(crl_rep.crls) == 1
    crl = crl_rep.crls[0]
    rsa_ca = deployment.issuers["rsa"].certificate
    assert crl.issuer == leaf.issuer == rsa_ca.subject and crl.is_signature_valid(rsa_ca.public_key())
    cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
    assert crl.public_bytes(Encoding.DER) == httpx.get(cdp, timeout=30).content  # the same bytes relying parties get
    foreign = read_certrep(http.post(req.message("22", issuer_and_serial(ra.subject, 1), ra)).content, req)
    assert (foreign.status, foreign.fail_info) == (FAILURE, BAD_CERT_ID)
    stranger = Requester.new()
    poll = read_certrep(http.post(stranger.message("20", issuer_and_subject(leaf.issuer, leaf.subject), ra)).content,
                        stranger)
    assert (poll.status, poll.fail_info) == (FAILURE, BAD_CERT_ID)


def test_renewal_with_revoked_certificate_is_refused(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv,
                                                    deployment: Any) -> None:
    rep, req = enroll(http, ra, otp(scep), "renew.example.test")
    leaf = rep.certificates[0]
    holder = Requester(req.key, leaf)
    ok = read_certrep(http.post(holder.message("17", make_csr(req.key, "renew.example.test", None), ra)).content,
                      holder)
    assert ok.status == SUCCESS
    other_subject = Requester(req.key, leaf)
    renamed = read_certrep(http.post(other_subject.message(
        "17", make_csr(req.key, "other.example.test", None, ("other.example.test",)), ra)).content, other_subject)
    assert (renamed.status, renamed.fail_info) == (FAILURE, BAD_REQUEST)
    deployment.authority.revoke(RevocationRequest((leaf.serial_number,), RevocationReason.keyCompromise,
                                                  ModelRequester("test", "scep-tests")))
    before = scep.counts()
    late = Requester(req.key, leaf)
    refused = read_certrep(http.post(late.message("17", make_csr(req.key, "renew.example.test", None), ra)).content,
                           late)
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep.counts() == before
    forged = Requester(req.key, self_signed(req.key, "renew.example.test"))
    bogus = read_certrep(http.post(forged.message("17", make_csr(req.key, "renew.example.test", None), ra)).content,
                         forged)
    assert (bogus.status, bogus.fail_info) == (FAILURE, BAD_CERT_ID)


# -- bad input ------------------------------------------------------------------------------


def test_not_scep_is_http_400_and_nothing_stored(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    req = Requester.new()
    good = req.message("19", make_csr(req.key, "bad.example.test", "x", ("bad.example.test",)), ra)
    before = scep.counts()
    for body in (b"", b"\x30", b"garbage" * 10, good[: len(good) // 2], good[:-1], b"\x30\x80" + b"\x00" * 50,
                 b"\x30\x84\xff\xff\xff\xff"):
        r = http.post(body)
        assert r.status_code == 400, (body[:16], r.status_code)
    assert http.get("PKIOperation", "!!!not base64!!!").status_code == 400
    assert http.get("PKIOperation", "").status_code == 400
    assert http.get("NoSuchOperation").status_code == 400
    assert http.client.get(f"{scep.url}/no-such-profile", params={"operation": "GetCACaps"}).status_code == 404
    assert http.client.put(scep.url, params={"operation": "PKIOperation"}, content=good).status_code == 405
    assert scep.counts() == before


def test_oversized_body_is_refused(http: ScepHttp, scep: ScepEnv) -> None:
    before = scep.counts()
    r = http.post(b"\x30" + b"\x00" * (1024 * 1024))
    assert r.status_code == 413
    long_get = http.client.get(scep.url, params={"operation": "PKIOperation", "message": "A" * 60_000})
    assert long_get.status_code in (400, 414)  # 414: the listener's request-head limit (listener.max_header_bytes)
    assert scep.counts() == before


def failure(http: ScepHttp, req: Requester, body: bytes) -> str | None:
    r = http.post(body)
    assert r.status_code == 200, r.text
    rep = read_certrep(r.content, req)
    assert rep.status == FAILURE
    return rep.fail_info


def test_protocol_failures(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    password = otp(scep)  # a valid one-time password: the failures must not consume it
    before = scep.counts()
    req = Requester.new()
    csr = make_csr(req.key, "neg.example.test", password, ("neg.example.test",))

    other_ra = self_signed(Requester.new().key, "not the RA")
    assert failure(http, req, req.message("19", csr, other_ra)) == BAD_MESSAGE_CHECK

    good = bytearray(req.message("19", csr, ra))
    sig_at = bytes(good).rfind(bytes(good[-256:]))  # RSA-2048 signature is the last 256 bytes
    good[sig_at + 10] ^= 0x01
    assert failure(http, req, bytes(good)) == BAD_MESSAGE_CHECK

    assert failure(http, req, req.message("19", csr, ra, corrupt_key=True)) == BAD_MESSAGE_CHECK
    assert failure(http, req, req.message("99", csr, ra)) == BAD_REQUEST
    assert failure(http, req, req.message("3", csr, ra)) == BAD_REQUEST
    old = datetime.now(UTC) - timedelta(days=3)
    assert failure(http, req, req.message("19", csr, ra, signing_time=old)) == BAD_TIME
    assert failure(http, req, req.message("19", b"\x30\x03\x02\x01\x00", ra)) == BAD_REQUEST  # not a CSR
    assert scep.counts() == before

    # the password was not consumed by any of the failures above; GET binding works too
    r = http.get_pki(req.message("19", csr, ra, cipher="tripledes_3key"))
    assert r.status_code == 200
    assert read_certrep(r.content, req).status == SUCCESS


def test_admin_challenge_endpoint_requires_admin_token(scep: ScepEnv) -> None:
    srv = scep.server
    url = f"{srv.https_url}/admin/v1/scep/challenges"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(srv.root_pem)), timeout=30) as client:
        assert client.post(url, json={}).status_code == 401
        assert client.post(url, json={}, headers={"authorization": "Bearer nope"}).status_code == 401
        auth = {"authorization": f"Bearer {srv.admin_token()}"}
        assert client.post(url, json={"profile": "no-such"}, headers=auth).status_code == 400
        assert client.post(url, json={"bogus": 1}, headers=auth).status_code == 400
        assert client.post(url, content=b"{" * 10_000, headers=auth).status_code == 413
        ok = client.post(url, json={"profile": "gateway", "ttl_seconds": 600}, headers=auth)
        assert ok.status_code == 201 and ok.json()["profile"] == "gateway"
    # plain HTTP listener does not expose the admin API
    assert httpx.post(f"{srv.http_url}/admin/v1/scep/challenges", json={}).status_code == 404



def test_challenge_password_is_not_stored(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv) -> None:
    """Issue 21 defect 11: scep_transactions.csr_der kept the challengePassword in clear. The CSR is
    stored without it; retransmissions (same CSR) and manual approval still work from the row."""
    import sqlite3

    def stored(transaction_id: str) -> bytes:
        with sqlite3.connect(scep.server.dir / "ikepki.db") as conn:
            (der,) = conn.execute("select csr_der from scep_transactions where transaction_id = ?",
                                  (transaction_id,)).fetchone()
        return bytes(der)

    password = otp(scep)
    req = Requester.new()
    csr = make_csr(req.key, "nopw.example.test", password, ("nopw.example.test",))
    first = read_certrep(http.post(req.message("19", csr, ra)).content, req)
    assert first.status == SUCCESS
    assert password.encode() not in stored(req.transaction_id)
    again = read_certrep(http.post(req.message("19", csr, ra)).content, req)  # a retransmission: same answer
    assert again.status == SUCCESS and again.certificates[0].serial_number == first.certificates[0].serial_number

    url = f"{scep.url}/gateway/pkiclient.exe"
    held_password = otp(scep, "gateway")
    rep, held = enroll(http, ra, held_password, "gw-nopw.example.test", url=url)
    assert rep.status == PENDING and held_password.encode() not in stored(held.transaction_id)
    run_ikepki("scep", "approve", held.transaction_id, directory=scep.server.dir)
    rsa_ca = x509.load_pem_x509_certificate((scep.server.dir / "ca" / "rsa.pem").read_bytes())
    poll_body = issuer_and_subject(rsa_ca.subject, x509.Name.from_rfc4514_string("CN=gw-nopw.example.test"))
    done = read_certrep(ScepHttp(url, http.client).post(held.message("20", poll_body, ra)).content, held)
    assert done.status == SUCCESS and same_key(done.certificates[0], held.key)


def test_approved_renewal_keeps_the_granted_subject(http: ScepHttp, ra: x509.Certificate, scep: ScepEnv,
                                                    deployment: Any) -> None:
    """A RenewalReq waiting for manual approval keeps the renewed certificate's subject when approved,
    as an immediate renewal does (the signer certificate is the CA-controlled grant)."""
    from cryptography.x509.oid import NameOID

    from ca.csr import parse_csr
    from ca.model import IssuanceRequest

    req = Requester.new()
    name = "gw-renew-approval.example.test"
    granted = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")
    first = deployment.authority.issue(IssuanceRequest(
        parse_csr(make_csr(req.key, name, None, (name,))), "gateway", ModelRequester("test", "operator"),
        subject_grants=(granted,)), issuer=RSA_ISSUER)
    leaf = first.certificate
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == [granted]
    url = f"{scep.url}/gateway/pkiclient.exe"
    holder = Requester(req.key, leaf)
    rep = read_certrep(ScepHttp(url, http.client).post(holder.message("17", make_csr(req.key, name, None, (name,)),
                                                                      ra)).content, holder)
    assert rep.status == PENDING
    run_ikepki("scep", "approve", holder.transaction_id, directory=scep.server.dir)
    poll_body = issuer_and_subject(leaf.issuer, leaf.subject)
    done = read_certrep(ScepHttp(url, http.client).post(holder.message("20", poll_body, ra)).content, holder)
    assert done.status == SUCCESS
    assert done.certificates[0].subject == leaf.subject and same_key(done.certificates[0], req.key)
