"""The SCEP server's domain logic (RFC 8894 §3.3 and §4): what to answer to each message.

Every certificate is issued by the RSA issuing CA through the Authority
(``Authority.issue(…, issuer="rsa")``) with ``Requester(channel="scep")``. The pkcsPKIEnvelope is
opened with the RA key on the HSM; replies are signed by the RA key on the HSM.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from ca.csr import CertificationRequest, load_stored_csr, parse_csr, without_challenge_password
from ca.errors import ErrorKind, PKIError
from ca.model import CertStatus, IssuanceRequest, Requester
from ca.ports import ServiceKeys
from ca.profiles import check_sans
from enrollment.scep import cms
from enrollment.scep.messages import FailInfo, HttpAnswer, MessageType, PkiStatus, ScepReply
from enrollment.scep.repository import ISSUED, ISSUING, PENDING, REJECTED, ScepRepository, Transaction
from enrollment.scep.settings import ScepProfileSettings, ScepSettings
from enrollment.scep.webhook import WebhookVerdict, ask_webhook

log = logging.getLogger("ikepki.scep")
RSA_ISSUER = "rsa"
RENEWAL_PRINCIPAL = "renewal of "  # principal prefix of a RenewalReq transaction (RFC 8894 §3.3.1.2)
LEGACY_HINT = ("micromdm scepclient (and other clients limited to single DES / SHA-1) need "
               "'scep: {allow_single_des: true}' in ikepki.yaml or IKEPKI_SCEP_ALLOW_SINGLE_DES=1 — a 56-bit cipher "
               "protects the challenge password in transit: prefer one-time challenges (ikepki scep challenge create)")
RSA_ONLY = "rsa-only"  # GetCACert CA-IDENT asking for RSA certificates only
CAPS = ("POSTPKIOperation", "SHA-256", "SHA-512", "SHA-384", "AES", "DES3", "Renewal", "SCEPStandard")
PKI_MESSAGE = "application/x-pki-message"
_FAIL_FOR_KIND = {ErrorKind.NOT_FOUND: FailInfo.badCertId}


def key_digest(cert_or_csr_key: Any) -> str:
    """SHA-256 (hex) of a SubjectPublicKeyInfo: the key half of a transaction's identity."""
    spki = cert_or_csr_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@dataclass
class _Exchange:
    """One PKIOperation in flight: what the reply needs besides the decision."""

    request: cms.SignedMessage
    profile: str
    source: str
    signer: x509.Certificate | None = None
    cipher: str = cms.DES3
    reuse: Transaction | None = None  # a finished transaction with this transactionID and key


class ScepService:
    def __init__(self, deployment: ServiceKeys, settings: ScepSettings | None = None) -> None:
        self.dep = deployment
        self.settings = settings or deployment.settings_for(ScepSettings, "scep")
        self.repo = ScepRepository(deployment.db)

    def warm_up(self) -> None:
        """Open the RA key, the RSA issuer and the profiles now (HSM and file access), not per request."""
        _ = (self.signer, self.issuer, self.ciphers, self.digests, self.dep.authority.profiles)

    # -- keys and certificates ----------------------------------------------------------------

    @cached_property
    def _ra(self) -> Any:
        return self.dep.service_key("scep-ra")

    @property
    def ra_certificate(self) -> x509.Certificate:
        return self._ra.certificate  # type: ignore[no-any-return]

    @cached_property
    def signer(self) -> cms.Signer:
        key = self._ra.key.key
        return cms.Signer(self.ra_certificate, lambda data, h: key.sign(data, padding.PKCS1v15(), h))

    @cached_property
    def issuer(self) -> Any:
        issuer = self.dep.issuers.get(RSA_ISSUER)
        if issuer is None:
            raise PKIError(ErrorKind.CONFIG, "SCEP needs the RSA issuing CA (issuer id 'rsa')")
        return issuer

    @cached_property
    def ciphers(self) -> frozenset[str]:
        allowed = {"aes128_cbc", "aes192_cbc", "aes256_cbc", cms.DES3}
        if self.settings.allow_single_des:
            allowed.add(cms.DES)
        return frozenset(allowed)

    @cached_property
    def digests(self) -> frozenset[str]:
        allowed = {"sha256", "sha384", "sha512"}
        if self.settings.allow_single_des:
            allowed.add("sha1")
        return frozenset(allowed)

    def has_profile(self, name: str) -> bool:
        profile = self.dep.authority.profiles.get(name)
        return profile is not None and profile.enrollable

    # -- GetCACaps, GetCACert, GetNextCACert (RFC 8894 §3.5, §4.2, §4.7) -------------------------

    def caps(self) -> HttpAnswer:
        caps = list(CAPS)
        if self.next_ca_certs():
            caps.append("GetNextCACert")
        if self.settings.allow_single_des:
            caps.append("SHA-1")
        return HttpAnswer(200, ("\n".join(caps) + "\n").encode(), "text/plain")

    def ca_certs(self, ca_ident: str = "") -> HttpAnswer:
        """GetCACert (RFC 8894 §4.2): RA certificate, RSA issuing CA and the root (strongSwan
        ``pki --scepca`` needs a self-signed CA; Windows/Apple MDM pin the root). CA-IDENT
        ``rsa-only`` (or setting ``include_root: false``) leaves out the EC root: micromdm
        scepclient without ``-ca-fingerprint`` encrypts to every certificate it gets and panics on
        an EC key. The client matrix is in enrollment/scep/README.md."""
        certs = [self.ra_certificate, self.issuer.certificate]
        if self.settings.include_root and ca_ident.strip().lower() != RSA_ONLY:
            certs.append(self.dep.root)
        return HttpAnswer(200, cms.degenerate(certs), "application/x-x509-ca-ra-cert")

    def next_ca_certs(self) -> list[x509.Certificate]:
        path = self.settings.next_ca_certs
        if not path:
            return []
        try:
            return x509.load_pem_x509_certificates(self.dep.path(path).read_bytes())
        except (OSError, ValueError):
            log.warning("scep: staged rollover certificates at %s cannot be read", path)
            return []

    def next_ca_cert(self) -> HttpAnswer | None:
        """SignedData signed by the current RA whose content is the degenerate PKCS#7 of the new
        CA (and RA) certificates (RFC 8894 §4.7.1)."""
        certs = self.next_ca_certs()
        if not certs:
            return None
        body = cms.signed_data(self.signer, cms.degenerate(certs), (), signing_time=self.dep.clock.now())
        return HttpAnswer(200, body, "application/x-x509-next-ca-cert")

    # -- PKIOperation (RFC 8894 §3.3) ----------------------------------------------------------

    def pki_operation(self, body: bytes, profile: str, source: str) -> HttpAnswer:
        try:
            request = cms.parse_signed(body)
        except cms.NotScepMessage as exc:
            log.info("scep: rejected a non-SCEP body from %s: %s", source, exc)
            return HttpAnswer(400, b"not a SCEP pkiMessage\n", "text/plain")
        ex = _Exchange(request, profile, source)
        try:
            reply = self._dispatch(ex)
        except cms.CmsError as exc:
            reply = ScepReply(PkiStatus.FAILURE, exc.fail_info, detail=exc.detail)
        except PKIError as exc:
            if exc.kind is ErrorKind.UNAVAILABLE:
                log.warning("scep: unavailable: %s", exc.detail)
                return HttpAnswer(503, b"temporarily unavailable\n", "text/plain")
            reply = ScepReply(PkiStatus.FAILURE, _FAIL_FOR_KIND.get(exc.kind, FailInfo.badRequest), detail=exc.detail)
        except Exception:  # never a 5xx for a request: answer FAILURE and keep the trace in the log
            log.exception("scep: unexpected error in transaction %s", request.transaction_id)
            reply = ScepReply(PkiStatus.FAILURE, FailInfo.badRequest, detail="internal error")
        if reply.fail_info is FailInfo.badAlg and self._legacy_refused(request, reply.detail):
            log.warning("scep: refused single DES / SHA-1 (transaction %s from %s: %s). %s", request.transaction_id,
                        source, reply.detail, LEGACY_HINT)
        elif reply.status is not PkiStatus.SUCCESS:
            log.info("scep: %s %s for transaction %s from %s: %s", reply.status.name,
                     reply.fail_info.name if reply.fail_info else "", request.transaction_id, source, reply.detail)
        try:
            return HttpAnswer(200, self._cert_rep(ex, reply), PKI_MESSAGE)
        except cms.CmsError as exc:  # e.g. the requester's certificate has no RSA key to encrypt to
            log.info("scep: cannot answer transaction %s: %s", request.transaction_id, exc.detail)
            return HttpAnswer(200, self._cert_rep(ex, ScepReply(PkiStatus.FAILURE, exc.fail_info)), PKI_MESSAGE)
        except PKIError as exc:
            log.warning("scep: cannot sign the reply: %s", exc.detail)
            return HttpAnswer(503, b"temporarily unavailable\n", "text/plain")

    def _legacy_refused(self, request: Any, detail: str | None) -> bool:
        """A badAlg because the client used DES-CBC or SHA-1 while ``allow_single_des`` is off."""
        if self.settings.allow_single_des:
            return False
        return request.digest_algorithm == "sha1" or f"content encryption {cms.DES} " in (detail or "")

    def _cert_rep(self, ex: _Exchange, reply: ScepReply) -> bytes:
        """CertRep (RFC 8894 §3.3.2): transactionID echoed, recipientNonce = the request's
        senderNonce, a fresh senderNonce; on SUCCESS the payload enveloped to the requester."""
        req = ex.request
        attrs: list[tuple[str, Any]] = [
            (cms.OID_MESSAGE_TYPE, cms.printable(MessageType.CertRep.value)),
            (cms.OID_TRANSACTION_ID, cms.printable(req.transaction_id)),
            (cms.OID_PKI_STATUS, cms.printable(reply.status.value)),
            (cms.OID_SENDER_NONCE, cms.octet_string(os.urandom(16))),
            (cms.OID_RECIPIENT_NONCE, cms.octet_string(req.sender_nonce)),
        ]
        if reply.status is PkiStatus.FAILURE:
            attrs.append((cms.OID_FAIL_INFO, cms.printable((reply.fail_info or FailInfo.badRequest).value)))
        content = None
        if reply.status is PkiStatus.SUCCESS and reply.payload is not None and ex.signer is not None:
            content = cms.envelope(reply.payload, ex.signer, ex.cipher)
        digest = req.digest_algorithm if req.digest_algorithm in ("sha256", "sha384", "sha512") else "sha256"
        return cms.signed_data(self.signer, content, attrs, digest, self.dep.clock.now())

    def _dispatch(self, ex: _Exchange) -> ScepReply:
        req = ex.request
        if req.digest_algorithm not in self.digests:
            raise cms.CmsError(FailInfo.badAlg, f"digest {req.digest_algorithm} is not allowed")
        ex.signer = req.verify()
        self._check_time(req.signing_time)
        try:
            kind = MessageType(req.message_type)
        except ValueError:
            raise cms.CmsError(FailInfo.badRequest, f"unknown messageType {req.message_type!r}") from None
        if kind is MessageType.CertRep:
            raise cms.CmsError(FailInfo.badRequest, "CertRep is a reply, not a request")
        if req.content is None:
            raise cms.CmsError(FailInfo.badRequest, "the request has no pkcsPKIEnvelope")
        opened = cms.open_envelope(req.content, self.ra_certificate, self._unwrap, self.ciphers)
        ex.cipher = opened.cipher
        handlers = {MessageType.PKCSReq: self._pkcs_req, MessageType.RenewalReq: self._renewal_req,
                    MessageType.CertPoll: self._cert_poll, MessageType.GetCert: self._get_cert,
                    MessageType.GetCRL: self._get_crl}
        return handlers[kind](ex, opened.data)

    def _unwrap(self, wrapped: bytes) -> bytes:
        """RSA PKCS#1 v1.5 key transport through PKCS#11. SoftHSM reports bad padding as
        CKR_GENERAL_ERROR, so every token refusal reads as a wrong key (implicit rejection in
        cms.open_envelope: no padding oracle). A token that is really down fails the signature
        of the CertRep next, which answers 503."""
        key = self._ra.key.key
        if len(wrapped) != (key.key_size + 7) // 8:
            raise ValueError("wrapped key length")
        try:
            return key.decrypt(wrapped, padding.PKCS1v15())  # type: ignore[no-any-return]
        except PKIError:
            raise ValueError("unwrap failed") from None

    def _check_time(self, signing_time: datetime | None) -> None:
        if signing_time is None:
            return
        skew = abs((self.dep.clock.now() - signing_time).total_seconds())
        if skew > self.settings.clock_skew_seconds:
            raise cms.CmsError(FailInfo.badTime, f"signingTime is {int(skew)} s away from the server clock")

    # -- PKCSReq and RenewalReq (RFC 8894 §3.3.1) ----------------------------------------------------

    def _pkcs_req(self, ex: _Exchange, data: bytes) -> ScepReply:
        csr = parse_csr(data)
        assert ex.signer is not None
        prior = self._prior(ex, csr)
        if prior is not None:
            return prior
        profile = self.dep.authority.profile(ex.profile)
        sans = self._sans(csr, ex.profile, self.settings.profile(ex.profile))
        check_sans(profile, list(sans))
        principal = self._authorize(ex, csr, sans)
        return self._enroll(ex, csr, ex.profile, principal, sans)

    def _renewal_req(self, ex: _Exchange, data: bytes) -> ScepReply:
        """RenewalReq: signed by the requester's current certificate from this CA, which must be
        unrevoked and unexpired, for the same subject (RFC 8894 §3.3.1.2)."""
        csr = parse_csr(data)
        assert ex.signer is not None
        old = self._current_certificate(ex.signer)
        old_sans = tuple(_san_list(ex.signer))
        sans = tuple(csr.sans) or old_sans
        grants = tuple(ex.signer.subject)  # CA-issued: the subject the renewed certificate keeps
        if self.dep.authority.subject_for(old.profile, csr.subject, sans, grants)[0] != ex.signer.subject:
            raise PKIError(ErrorKind.BAD_REQUEST, "a renewal must keep the subject of the current certificate")
        prior = self._prior(ex, csr)
        if prior is not None:
            return prior
        if any(n not in old_sans for n in csr.sans):
            raise PKIError(ErrorKind.REJECTED_IDENTIFIER, "a renewal cannot add subject alternative names")
        return self._enroll(ex, csr, old.profile, f"{RENEWAL_PRINCIPAL}{old.serial_hex}", sans, grants)

    def _current_certificate(self, signer: x509.Certificate) -> Any:
        try:
            signer.verify_directly_issued_by(self.issuer.certificate)
        except Exception as exc:  # InvalidSignature, wrong key type or wrong issuer
            raise cms.CmsError(FailInfo.badCertId,
                               f"the signer certificate is not from this CA ({exc.__class__.__name__})") from None
        info = self.dep.store.get(signer.serial_number)
        if info is None or info.issuer_id != RSA_ISSUER:
            raise cms.CmsError(FailInfo.badCertId, "the signer certificate is not known to this CA")
        now = self.dep.clock.now()
        if info.status is not CertStatus.valid:
            raise PKIError(ErrorKind.BAD_REQUEST, "the current certificate is revoked or on hold")
        if not info.not_before <= now < info.not_after:
            raise PKIError(ErrorKind.BAD_REQUEST, "the current certificate has expired")
        if not self.has_profile(info.profile):
            raise PKIError(ErrorKind.BAD_REQUEST, f"certificates of profile {info.profile} are not renewed over SCEP")
        return info

    def _prior(self, ex: _Exchange, csr: CertificationRequest) -> ScepReply | None:
        """A retransmitted request (same transactionID, key and CSR) gets the same answer again.
        A new CSR under a finished transaction is a new enrollment with the same key (strongSwan
        derives the transactionID from the key, RFC 8894 §3.2.1.1): its row is reused."""
        assert ex.signer is not None
        tx = self.repo.find(ex.request.transaction_id, key_digest(ex.signer.public_key()))
        if tx is None:
            return None
        if tx.csr_der in (csr.der, without_challenge_password(csr.der)):  # rows from before redaction too
            return self._reply_for(tx)
        if tx.status in (PENDING, ISSUING):
            raise PKIError(ErrorKind.BAD_REQUEST, "another request with this transactionID is pending")
        ex.reuse = tx
        return None

    def _reply_for(self, tx: Transaction) -> ScepReply:
        if tx.status in (PENDING, ISSUING):
            return ScepReply(PkiStatus.PENDING, detail="awaiting manual approval")
        if tx.status == REJECTED:
            return ScepReply(PkiStatus.FAILURE, FailInfo.badRequest, detail="request was rejected")
        info = self.dep.store.get(tx.serial) if tx.serial is not None else None
        if info is None:
            return ScepReply(PkiStatus.FAILURE, FailInfo.badCertId, detail="issued certificate not found")
        return ScepReply(PkiStatus.SUCCESS, payload=cms.degenerate([info.certificate()]))

    def _sans(self, csr: CertificationRequest, profile: str, cfg: ScepProfileSettings) -> tuple[x509.GeneralName, ...]:
        if csr.sans or not cfg.san_from_cn:
            return tuple(csr.sans)
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns:
            return ()
        cn = str(cns[0].value)
        if profile == "user" or "@" in cn:
            return (x509.RFC822Name(cn),)
        return (x509.DNSName(cn.lower()),)

    def _authorize(self, ex: _Exchange, csr: CertificationRequest, sans: tuple[x509.GeneralName, ...]) -> str:
        """Challenge password (static or one-time), or the dynamic-validation webhook when configured."""
        cfg = self.settings.profile(ex.profile)
        password = csr.challenge_password
        if cfg.webhook_url:
            verdict = ask_webhook(cfg.webhook_url, cfg.webhook_timeout, self._webhook_payload(ex, csr, sans))
            if verdict is not WebhookVerdict.ALLOW:
                log.warning("scep: webhook %s for transaction %s", verdict.value, ex.request.transaction_id)
                raise PKIError(ErrorKind.UNAUTHORIZED, f"dynamic validation: {verdict.value}")
            return "webhook"
        if not password:
            raise PKIError(ErrorKind.UNAUTHORIZED, "a challenge password is required")
        static = cfg.challenge_password.get_secret_value() if cfg.challenge_password else None
        if static and hmac.compare_digest(password.encode(), static.encode()):
            return f"static challenge ({ex.profile})"
        if self.repo.consume_challenge(password, ex.profile, self.dep.clock.now(), ex.request.transaction_id):
            return "one-time challenge"
        raise PKIError(ErrorKind.UNAUTHORIZED, "wrong, used or expired challenge password")

    def _webhook_payload(self, ex: _Exchange, csr: CertificationRequest,
                         sans: tuple[x509.GeneralName, ...]) -> dict[str, Any]:
        from ca.profiles import san_text

        return {"transaction_id": ex.request.transaction_id, "profile": ex.profile,
                "challenge_password": csr.challenge_password, "subject": csr.subject.rfc4514_string(),
                "sans": [san_text(n) for n in sans], "public_key_sha256": key_digest(csr.public_key),
                "csr": csr.der.hex(), "source": ex.source}

    def _enroll(self, ex: _Exchange, csr: CertificationRequest, profile: str, principal: str,
                sans: tuple[x509.GeneralName, ...], grants: tuple[x509.NameAttribute, ...] = ()) -> ScepReply:
        assert ex.signer is not None
        now = self.dep.clock.now()
        pending = self.settings.profile(profile).manual_approval
        record = {"transaction_id": ex.request.transaction_id, "key_sha256": key_digest(ex.signer.public_key()),
                  "profile": profile, "subject": csr.subject.rfc4514_string(),
                  "csr_der": without_challenge_password(csr.der),  # never keep the shared secret
                  "signer_der": ex.signer.public_bytes(Encoding.DER), "cipher": ex.cipher, "principal": principal,
                  "source": ex.source, "now": now}
        if pending:
            if not self._save(ex, status=PENDING, serial=None, **record):
                raise PKIError(ErrorKind.BAD_REQUEST, "transactionID already in use")
            return ScepReply(PkiStatus.PENDING, detail="awaiting manual approval")
        issued = self._issue(csr, profile, principal, ex.source, sans, grants)
        self._save(ex, status=ISSUED, serial=issued.serial, **record)
        return ScepReply(PkiStatus.SUCCESS, payload=cms.degenerate([issued.certificate]))

    def _save(self, ex: _Exchange, **row: Any) -> bool:
        if ex.reuse is None:
            return self.repo.record(**row)
        return self.repo.reopen(ex.reuse.id, ex.reuse.status, **row)

    def _issue(self, csr: CertificationRequest, profile: str, principal: str, source: str,
               sans: tuple[x509.GeneralName, ...], grants: tuple[x509.NameAttribute, ...] = ()) -> Any:
        # SCEP clients are RSA-only: every profile is issued by the RSA issuing CA
        return self.dep.authority.issue(IssuanceRequest(
            csr=csr, profile=profile, requester=Requester("scep", principal, source), replace_sans=sans,
            subject_grants=grants), issuer=RSA_ISSUER)

    # -- CertPoll, GetCert, GetCRL (RFC 8894 §3.3.3, §4.3.1) ---------------------------------------------

    def _cert_poll(self, ex: _Exchange, data: bytes) -> ScepReply:
        """CertPoll: IssuerAndSubject; the transaction is found by transactionID and the signer's key."""
        _parse_issuer_and_subject(data)
        assert ex.signer is not None
        tx = self.repo.find(ex.request.transaction_id, key_digest(ex.signer.public_key()))
        if tx is None:
            raise cms.CmsError(FailInfo.badCertId, "no such transaction for this key")
        return self._reply_for(tx)

    def _get_cert(self, ex: _Exchange, data: bytes) -> ScepReply:
        issuer, serial = _parse_issuer_and_serial(data)
        if issuer != asn1_x509.Name.load(self.issuer.certificate.subject.public_bytes()):
            raise cms.CmsError(FailInfo.badCertId, "unknown issuer")
        info = self.dep.store.get(serial)
        if info is None or info.issuer_id != RSA_ISSUER:
            raise cms.CmsError(FailInfo.badCertId, "no certificate with this serial number")
        return ScepReply(PkiStatus.SUCCESS, payload=cms.degenerate([info.certificate()]))

    def _get_crl(self, ex: _Exchange, data: bytes) -> ScepReply:
        """GetCRL (RFC 8894 §3.3.3): the CRL published at the issuer's CRL distribution point (the
        same bytes every relying party fetches, so cRLNumber stays monotonic, RFC 5280 §5.2.3),
        fetched over HTTP like any relying party would and checked against the RSA CA's key."""
        issuer, _ = _parse_issuer_and_serial(data)
        if issuer != asn1_x509.Name.load(self.issuer.certificate.subject.public_bytes()):
            raise cms.CmsError(FailInfo.badCertId, "unknown issuer")
        crl = fetch_published_crl(self.issuer.urls.crl, self.issuer.certificate)
        if crl is None:
            return ScepReply(PkiStatus.FAILURE, FailInfo.badRequest,
                             detail=f"no valid CRL available at {self.issuer.urls.crl}")
        return ScepReply(PkiStatus.SUCCESS, payload=cms.degenerate([], [crl]))

    # -- manual approval (ikepki scep approve / reject) --------------------------------------------

    def approve(self, row_id: int, approver: str) -> Transaction:
        tx = self.repo.by_id(row_id)
        now = self.dep.clock.now()
        if not self.repo.transition(row_id, PENDING, ISSUING, now):
            raise PKIError(ErrorKind.CONFLICT, f"transaction {row_id} is {tx.status}, not pending")
        try:
            csr = load_stored_csr(tx.csr_der)  # verified on receipt, stored without the challenge
            sans = self._sans(csr, tx.profile, self.settings.profile(tx.profile))
            issued = self._issue(csr, tx.profile, f"{tx.principal}; approved by {approver}", tx.source, sans,
                                 self._renewal_grants(tx))
        except PKIError:
            self.repo.transition(row_id, ISSUING, REJECTED, self.dep.clock.now())
            raise
        self.repo.transition(row_id, ISSUING, ISSUED, self.dep.clock.now(), serial=issued.serial)
        self.dep.audit.append(now, approver, "scep-approve", "scep", transaction=tx.transaction_id,
                              serial=issued.info.serial_hex)
        return self.repo.by_id(row_id)

    def _renewal_grants(self, tx: Transaction) -> tuple[x509.NameAttribute, ...]:
        """An approved RenewalReq keeps the subject of the certificate that signed it (as
        :meth:`_renewal_req` does at once), if that certificate is still a current one of this CA."""
        if not tx.principal.startswith(RENEWAL_PRINCIPAL):
            return ()
        try:
            signer = x509.load_der_x509_certificate(tx.signer_der)
            self._current_certificate(signer)
        except (ValueError, PKIError, cms.CmsError):
            return ()
        return tuple(signer.subject)

    def reject(self, row_id: int, approver: str) -> Transaction:
        tx = self.repo.by_id(row_id)
        now = self.dep.clock.now()
        if not self.repo.transition(row_id, PENDING, REJECTED, now):
            raise PKIError(ErrorKind.CONFLICT, f"transaction {row_id} is {tx.status}, not pending")
        self.dep.audit.append(now, approver, "scep-reject", "scep", transaction=tx.transaction_id)
        return self.repo.by_id(row_id)

    def create_challenge(self, profile: str, created_by: str, ttl: timedelta | None = None) -> Any:
        if not self.has_profile(profile):
            raise PKIError(ErrorKind.BAD_REQUEST, f"unknown certificate profile {profile!r}")
        ttl = ttl or timedelta(seconds=self.settings.challenge_ttl_seconds)
        now = self.dep.clock.now()
        challenge = self.repo.create_challenge(profile, ttl, created_by, now)
        self.dep.audit.append(now, created_by, "scep-challenge", "scep", profile=profile, id=challenge.id,
                              expires=challenge.expires_at.isoformat())
        return challenge


def _san_list(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _parse_issuer_and_serial(data: bytes) -> tuple[asn1_x509.Name, int]:
    try:
        ias = asn1_cms.IssuerAndSerialNumber.load(data, strict=True)
        return ias["issuer"], int(ias["serial_number"].native)
    except (ValueError, TypeError, KeyError):
        raise cms.CmsError(FailInfo.badRequest, "messageData is not an IssuerAndSerialNumber") from None


class _IssuerAndSubject(core.Sequence):  # type: ignore[misc]
    """RFC 8894 §3.3.3: IssuerAndSubject ::= SEQUENCE { issuer Name, subject Name }."""

    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


def _parse_issuer_and_subject(data: bytes) -> None:
    try:
        ias = _IssuerAndSubject.load(data, strict=True)
        ias["issuer"].native, ias["subject"].native
    except (ValueError, TypeError, KeyError):
        raise cms.CmsError(FailInfo.badRequest, "messageData is not an IssuerAndSubject") from None


MAX_CRL_BYTES = 64 * 1024 * 1024


def fetch_published_crl(url: str, issuer: x509.Certificate, timeout: float = 5.0) -> bytes | None:
    """The DER CRL at ``url`` if it is signed by ``issuer``; None (logged) otherwise."""
    import httpx

    try:
        with httpx.stream("GET", url, timeout=timeout) as resp:
            if resp.status_code != 200:
                log.warning("GetCRL: %s answered %s", url, resp.status_code)
                return None
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_CRL_BYTES:
                    log.warning("GetCRL: %s larger than %d bytes", url, MAX_CRL_BYTES)
                    return None
        crl = x509.load_der_x509_crl(body)
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            log.warning("GetCRL: %s is not a CRL of %s", url, issuer.subject.rfc4514_string())
            return None
        return body
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("GetCRL: cannot fetch %s: %s", url, exc)
        return None
