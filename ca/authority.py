"""The Authority: the single path that issues, renews and revokes certificates.

ACME, EST, SCEP, TPM attestation (AK certificates), the admin API, the CLI and ikepki's own service
certificates (TLS, OCSP and push signers, SCEP RA) all call it. Every certificate is linted and
recorded (with its audit row, in one transaction) before it is returned.

Issuance follows Boulder's shape: the to-be-signed certificate is first signed by a throwaway
software key of the issuer's key type and that copy is linted (:func:`ca.lint.lint_issued`); only
then does the issuer's HSM key sign the same TBSCertificate once, and the result is checked to be
byte-identical to the linted copy with a signature that verifies under the issuer certificate.
So the HSM never signs a certificate that fails lint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from ca.audit import AuditLog
from ca.clock import Clock
from ca.errors import ErrorKind, PKIError
from ca.issuer import Issuer
from ca.lint import LintKeys, lint_issued, lint_signed
from ca.model import (
    CertificateInfo,
    CertStatus,
    IssuanceRequest,
    IssuedCertificate,
    PostureMark,
    Requester,
    RevocationReason,
    RevocationRequest,
    UserIdentity,
)
from ca.oids import POSTURE_COMPLIANT, POSTURE_QUARANTINE
from ca.profiles import OID_OCSP_NOCHECK, Profile, build_subject, check_sans, san_text
from ca.store.sql import SqlCertificateStore, audit_row

BACKDATE = timedelta(minutes=1)  # tolerate small clock skew on relying parties
MAX_CLOCK_SKEW = timedelta(minutes=5)  # an invalidity date may lie this far in the future (requester's clock)
POSTURE_POLICIES = frozenset({POSTURE_COMPLIANT, POSTURE_QUARANTINE})


def random_serial() -> int:
    """159 random bits from the OS CSPRNG: positive, fits 20 octets (RFC 5280 §4.1.2.2)."""
    while True:
        serial = int.from_bytes(os.urandom(20), "big") >> 1
        if serial.bit_length() >= 64:
            return serial


@dataclass(frozen=True)
class _Template:
    profile: Profile
    issuer: Issuer
    public_key: CertificatePublicKeyTypes
    subject: x509.Name
    sans: list[x509.GeneralName]
    lifetime: timedelta
    requester: Requester
    device_id: str | None
    ek_fingerprint: str | None
    subject_dropped: tuple[str, ...] = ()
    user: UserIdentity | None = None
    posture: PostureMark | None = None


class Authority:
    def __init__(self, issuers: dict[str, Issuer], store: SqlCertificateStore, profiles: dict[str, Profile],
                 audit: AuditLog, clock: Clock) -> None:
        self.issuers = issuers
        self.store = store
        self.profiles = profiles
        self.audit = audit
        self.clock = clock
        self._lint_keys = LintKeys()

    # -- issuance -----------------------------------------------------------------------------

    def profile(self, name: str, *, allow_internal: bool = False) -> Profile:
        profile = self.profiles.get(name)
        if profile is None or (not profile.enrollable and not allow_internal):
            raise PKIError(ErrorKind.BAD_REQUEST, f"unknown certificate profile {name!r}")
        return profile

    def issuer_for(self, profile: Profile, issuer_id: str | None = None) -> Issuer:
        """The issuing CA: ``issuer_id`` when given (e.g. SCEP's RSA CA, a delegated signer's CA), else the
        profile's own."""
        wanted = issuer_id or profile.issuer
        issuer = self.issuers.get(wanted)
        if issuer is None:
            raise PKIError(ErrorKind.CONFIG, f"profile {profile.name} needs issuing CA {wanted!r}")
        return issuer

    def issue(self, request: IssuanceRequest, *, issuer: str | None = None) -> IssuedCertificate:
        """Issue from a CSR for an enrollable profile (internal ones need ``request.allow_internal``)."""
        profile = self.profile(request.profile, allow_internal=request.allow_internal)
        sans = list(request.replace_sans) if request.replace_sans is not None else request.csr.sans
        sans += [n for n in request.extra_sans if n not in sans]
        if (request.device_id or request.ek_fingerprint) and \
                self.store.is_device_blocked(request.device_id, request.ek_fingerprint):
            raise PKIError(ErrorKind.BLOCKED, "this device is blocked from enrollment")
        check_sans(profile, sans)
        _check_user_uris(sans, request.user)
        # a CA-decided subject (the IdP mapping) is requested and granted as a whole, under the same rules
        requested = request.replace_subject if request.replace_subject is not None else request.csr.subject
        grants = (*request.subject_grants, *(request.replace_subject or ()))
        subject, dropped = build_subject(profile, requested, sans, grants)
        return self._issue(_Template(
            profile=profile, issuer=self.issuer_for(profile, issuer), public_key=request.csr.public_key,
            subject=subject, sans=sans, lifetime=profile.lifetime(request.lifetime),
            requester=request.requester, device_id=request.device_id, ek_fingerprint=request.ek_fingerprint,
            subject_dropped=tuple(dropped), user=request.user, posture=request.posture))

    def subject_for(self, profile_name: str, requested: x509.Name, sans: Sequence[x509.GeneralName],
                    grants: Sequence[x509.NameAttribute] = ()) -> tuple[x509.Name, list[str]]:
        """The subject :meth:`issue` would give this request (e.g. to compare a renewal request
        with the certificate it renews, RFC 7030 §4.2.2 / RFC 8894 §3.3.1.2)."""
        return build_subject(self.profile(profile_name, allow_internal=True), requested, sans, grants)

    def issue_internal(self, profile_name: str, public_key: CertificatePublicKeyTypes, subject: x509.Name,
                       sans: Sequence[x509.GeneralName] = (), lifetime: timedelta | None = None,
                       requester: Requester | None = None, *, issuer: str | None = None,
                       device_id: str | None = None, ek_fingerprint: str | None = None) -> IssuedCertificate:
        """Certificates without a CSR: those ikepki issues to itself (TLS server, OCSP signer, push signer,
        SCEP RA) and TPM attestation-key certificates (the AK proved possession by credential activation).
        ``subject`` is used as given: the caller builds it, not a requester."""
        profile = self.profile(profile_name, allow_internal=True)
        if (device_id or ek_fingerprint) and self.store.is_device_blocked(device_id, ek_fingerprint):
            raise PKIError(ErrorKind.BLOCKED, "this device is blocked from enrollment")
        check_sans(profile, list(sans))
        return self._issue(_Template(profile, self.issuer_for(profile, issuer), public_key, subject, list(sans),
                                     profile.lifetime(lifetime), requester or Requester("internal", "ikepki"),
                                     device_id, ek_fingerprint))

    def _issue(self, t: _Template) -> IssuedCertificate:
        now = self.clock.now()
        not_after = min(now + t.lifetime, t.issuer.certificate.not_valid_after_utc)
        if not_after <= now:
            raise PKIError(ErrorKind.UNAVAILABLE, f"issuing CA {t.issuer.id} has expired")
        if t.posture is not None:  # never valid past the device evidence it was issued on (issue 17)
            if t.posture.policy_oid not in POSTURE_POLICIES:
                raise PKIError(ErrorKind.INTERNAL, f"unknown posture policy {t.posture.policy_oid.dotted_string}")
            if t.posture.evidence_expires <= now:
                raise PKIError(ErrorKind.BAD_REQUEST, "the device posture evidence has expired")
            not_after = min(not_after, t.posture.evidence_expires)
        builder = (x509.CertificateBuilder().subject_name(t.subject).issuer_name(t.issuer.name)
                   .public_key(t.public_key).serial_number(random_serial())
                   .not_valid_before(now - BACKDATE).not_valid_after(not_after))
        for ext, critical in _extensions(t):
            builder = builder.add_extension(ext, critical=critical)
        key = t.issuer.key
        padding = key.rsa_padding()
        linted = builder.sign(self._lint_keys.like(t.issuer), key.hash_algorithm, rsa_padding=padding)
        lint_issued(linted, t.profile, t.issuer, t.posture)
        cert = builder.sign(key.key, key.hash_algorithm, rsa_padding=padding)  # the one HSM signature
        lint_signed(cert, linted, t.issuer)
        info = CertificateInfo(
            serial=cert.serial_number, issuer_id=t.issuer.id, subject=t.subject.rfc4514_string(),
            sans=tuple(san_text(n) for n in t.sans), profile=t.profile.name, not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, status=CertStatus.valid, der=cert.public_bytes(Encoding.DER),
            requester=t.requester.principal, channel=t.requester.channel, device_id=t.device_id,
            ek_fingerprint=t.ek_fingerprint)
        dropped = {"subject_dropped": list(t.subject_dropped)} if t.subject_dropped else {}
        ek = {"ek_fingerprint": t.ek_fingerprint} if t.ek_fingerprint else {}
        posture = {"posture": t.posture.policy_oid.dotted_string} if t.posture else {}
        # The audit file line is written inside the store transaction: an unwritable sink raises
        # PKIError(UNAVAILABLE) and nothing is committed (a commit failing after the line leaves a
        # line for a certificate that does not exist, never a certificate without a line).
        self.store.insert_certificate(info, now, audit_row(
            now, t.requester.principal, "issue", t.requester.channel, t.requester.source, info.serial,
            profile=t.profile.name, sans=list(info.sans), subject=info.subject, **posture), user=t.user,
            before_commit=lambda: self.audit.append(
                now, t.requester.principal, "issue", t.requester.channel, source=t.requester.source,
                serial=info.serial_hex, profile=t.profile.name, identities=list(info.sans), subject=info.subject,
                device=t.device_id, **dropped, **ek, **posture))
        return IssuedCertificate(info, cert, t.issuer.chain_for_leaf())

    # -- revocation ---------------------------------------------------------------------------

    def revoke(self, request: RevocationRequest) -> list[CertificateInfo]:
        """Revoke (reason certificateHold: suspend) the given serials; returns those changed."""
        if request.reason is RevocationReason.removeFromCRL:
            raise PKIError(ErrorKind.BAD_REQUEST, "removeFromCRL is not a revocation reason; release the hold")
        now = self.clock.now()
        check_invalidity_date(request.invalidity_date, now)
        r = request.requester

        def audit_lines(changed: list[CertificateInfo]) -> None:  # inside the transaction, as for issuance
            for info in changed:
                self.audit.append(now, r.principal, "hold" if info.status is CertStatus.hold else "revoke",
                                  r.channel, source=r.source, serial=info.serial_hex, reason=request.reason.name,
                                  identities=list(info.sans), device=info.device_id)

        done = self.store.revoke(request.serials, request.reason, now, r.principal, r.channel, r.source,
                                 request.invalidity_date, self.issuer_identity, before_commit=audit_lines)
        for info in done:
            if request.block_devices and (info.device_id or info.ek_fingerprint):
                self.block_device(info.device_id or f"ek:{info.ek_fingerprint}", r, request.reason.name)
        return done

    def release_hold(self, serial: int, requester: Requester) -> CertificateInfo:
        now = self.clock.now()
        return self.store.release_hold(
            serial, now, requester.principal, requester.channel, requester.source, self.issuer_identity,
            before_commit=lambda info: self.audit.append(now, requester.principal, "unhold", requester.channel,
                                                         source=requester.source, serial=info.serial_hex))

    def block_device(self, device_id: str, requester: Requester, reason: str | None = None,
                     blocked: bool = True) -> None:
        now = self.clock.now()
        self.store.set_device_blocked(  # the audit file line inside the transaction, as for revocation
            device_id, blocked, now, requester.principal, requester.channel, reason,
            before_commit=lambda: self.audit.append(now, requester.principal,
                                                    "block-device" if blocked else "unblock-device",
                                                    requester.channel, device=device_id, reason=reason))

    def issuer_identity(self, issuer_id: str) -> tuple[str, str]:
        issuer = self.issuers[issuer_id]
        return issuer.name.rfc4514_string(), issuer.key_id.hex()

    def now(self) -> datetime:
        return self.clock.now()


def check_invalidity_date(at: datetime | None, now: datetime) -> None:
    """RFC 5280 §5.3.2: the date the key is known or suspected to have been compromised. It needs a
    timezone, must not lie in the future (beyond ``MAX_CLOCK_SKEW``); the store also refuses one
    before the certificate's notBefore (checked per serial in the revocation transaction)."""
    if at is None:
        return
    if at.tzinfo is None or at.utcoffset() is None:
        raise PKIError(ErrorKind.BAD_REQUEST, "invalidity date needs a timezone (e.g. 2026-01-01T00:00:00Z)")
    if at > now + MAX_CLOCK_SKEW:
        raise PKIError(ErrorKind.BAD_REQUEST, "invalidity date lies in the future")


def _check_user_uris(sans: list[x509.GeneralName], user: UserIdentity | None) -> None:
    """A URI SAN names an identity-provider user: only the verified one (OIDC enrollment) may appear."""
    for name in sans:
        if isinstance(name, x509.UniformResourceIdentifier) and (user is None or name.value != user.uri):
            raise PKIError(ErrorKind.REJECTED_IDENTIFIER, "URI names are set only from a verified identity-provider "
                                                          "user")


def _extensions(t: _Template) -> list[tuple[x509.ExtensionType, bool]]:
    """RFC 5280 §4.2 extensions for an end-entity certificate of this profile."""
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=t.profile.key_encipherment,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                       encipher_only=False, decipher_only=False), True),
        (x509.SubjectKeyIdentifier.from_public_key(t.public_key), False),
        (x509.AuthorityKeyIdentifier(t.issuer.key_id, None, None), False),
        (x509.CertificatePolicies([x509.PolicyInformation(t.profile.policy_oid, None)]
                                  + ([x509.PolicyInformation(t.posture.policy_oid, None)] if t.posture else [])),
         False),
    ]
    if t.profile.ekus:
        exts.append((x509.ExtendedKeyUsage(list(t.profile.ekus)), False))
    if t.sans:
        exts.append((x509.SubjectAlternativeName(t.sans), len(t.subject) == 0))
    if t.profile.ocsp_nocheck:
        exts.append((x509.UnrecognizedExtension(OID_OCSP_NOCHECK, b"\x05\x00"), False))
    if not t.profile.revocation_pointers:
        return exts
    urls = t.issuer.urls
    exts += [
        (x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)),
            x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(urls.ca_issuers))]), False),
        (x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(urls.crl)], None, None,
                                                            None)]), False),
        (x509.FreshestCRL([x509.DistributionPoint([x509.UniformResourceIdentifier(urls.delta_crl)], None, None,
                                                  None)]), False),
    ]
    return exts
