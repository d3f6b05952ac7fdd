"""The EST operations (RFC 7030 §4.1-4.5) as plain functions over the CA core; the HTTP edge
(``routes.py``) only decodes, calls these and maps ``PKIError`` kinds to status codes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca.csr import CertificationRequest, parse_csr
from ca.errors import ErrorKind, PKIError
from ca.model import IssuanceRequest, IssuedCertificate, Requester
from ca.ports import ServiceKeys
from ca.profiles import Profile, san_text
from enrollment.est import keyprotect, wire
from enrollment.est.auth import AUTH_METHOD, Authenticator, Principal, PrincipalKind
from enrollment.est.registrations import Registration, RegistrationStore
from enrollment.est.settings import EstSettings, LabelSettings

CHANNEL = "est"
# Kinds after which a claimed secret is released: nothing was stored, the client may retry.
_RELEASE_ON = {ErrorKind.BAD_REQUEST, ErrorKind.BAD_CSR, ErrorKind.REJECTED_IDENTIFIER, ErrorKind.FORBIDDEN,
               ErrorKind.BLOCKED, ErrorKind.UNAVAILABLE, ErrorKind.CONFLICT}


@dataclass(frozen=True)
class EnrollCall:
    """One simpleenroll / simplereenroll / serverkeygen request, decoded from HTTP."""

    operation: str
    label: str | None
    csr_der: bytes
    basic: tuple[str, str] | None
    client_cert: x509.Certificate | None
    source: str
    basic_checked: bool | None = None  # Authenticator.check_basic's verdict, when the HTTP edge ran it


@dataclass(frozen=True)
class EnrollOutcome:
    issued: IssuedCertificate | None = None
    private_key_der: bytes | None = None  # serverkeygen: PKCS#8, or CMS when key_encrypted
    key_encrypted: bool = False  # §4.4.2 server-generated-key (EnvelopedData)
    retry_after: int | None = None  # manual approval pending (202)
    pending_id: str | None = None


@dataclass(frozen=True)
class _Plan:
    """What will be issued, once authorised."""

    principal: Principal
    label: str
    profile: str
    csr: CertificationRequest
    replace_sans: tuple[x509.GeneralName, ...] | None
    registration: Registration | None
    device_id: str | None
    ek_fingerprint: str | None
    lifetime: timedelta | None
    source: str
    # subject attributes CA-controlled data grants (registration, certificate being renewed)
    grants: tuple[x509.NameAttribute, ...] = ()


class EstService:
    def __init__(self, deployment: ServiceKeys, settings: EstSettings) -> None:
        self.dep = deployment
        self.settings = settings
        self.registrations = RegistrationStore(deployment.db)
        self.auth = Authenticator(settings, self.registrations, deployment.store, deployment.clock)
        self._signer: tuple[Any, list[x509.Certificate]] | None = None
        for name, label in settings.labels.items():  # fail closed on a bad profile name
            profile = deployment.authority.profiles.get(label.profile)
            if profile is None or not profile.enrollable:
                raise PKIError(ErrorKind.CONFIG, f"est.labels.{name}: profile {label.profile!r} is not enrollable")
            if not name or "/" in name:
                raise PKIError(ErrorKind.CONFIG, f"invalid EST label {name!r}")
        if settings.default_label not in settings.labels:
            raise PKIError(ErrorKind.CONFIG, f"est.default_label {settings.default_label!r} is not a label")
        profiles = deployment.authority.profiles
        for oid in settings.ra_ekus:  # an EKU every enrolled device gets would make every device an RA
            if any(p.enrollable and oid in {e.dotted_string for e in p.ekus} for p in profiles.values()):
                raise PKIError(ErrorKind.CONFIG, f"est.ra_ekus: {oid} is issued by an enrollable profile")

    # -- lookups ------------------------------------------------------------------------------

    def label(self, name: str | None) -> tuple[str, LabelSettings]:
        key = name or self.settings.default_label
        found = self.settings.labels.get(key)
        if found is None:
            raise PKIError(ErrorKind.NOT_FOUND, f"unknown EST label {key!r}")
        return key, found

    def profile_for(self, label: LabelSettings) -> Profile:
        return self.dep.authority.profile(label.profile)

    def cacerts(self, label_name: str | None) -> bytes:
        """§4.1.3: the CA certificates for this label's profile: issuing CA chain and the root."""
        _, label = self.label(label_name)
        issuer = self.dep.authority.issuer_for(self.profile_for(label))
        certs = [issuer.certificate, *issuer.chain_for_leaf()]
        certs = [c for i, c in enumerate(certs) if c not in certs[:i]]
        if self.dep.root not in certs:
            certs.append(self.dep.root)
        return wire.certs_only(certs)

    def csrattrs(self, label_name: str | None) -> bytes:
        """§4.5.2: what the profile needs: ECDSA P-256 with SHA-256 and subjectAltName."""
        _, label = self.label(label_name)
        profile = self.profile_for(label)
        issuer = self.dep.authority.issuer_for(profile)
        key = issuer.certificate.public_key()
        curve = "secp256r1" if isinstance(key, ec.EllipticCurvePublicKey) else None
        return wire.csr_attributes(curve, profile.require_san)

    # -- enrollment ---------------------------------------------------------------------------

    def enroll(self, call: EnrollCall) -> EnrollOutcome:
        label_name, label = self.label(call.label)
        principal = self._authenticate(call, label)
        csr = parse_csr(call.csr_der)
        server_key, recipient = None, None
        if call.operation == "serverkeygen":
            if not self.settings.serverkeygen:
                raise PKIError(ErrorKind.NOT_FOUND, "serverkeygen is disabled")
            key_id = keyprotect.requested_key_id(call.csr_der)
            if key_id is not None:  # §4.4.1.2: encrypt the key to a key the client holds
                recipient = keyprotect.choose_recipient(
                    key_id, [call.client_cert.public_key() if call.client_cert else None, csr.public_key])
            server_key = ec.generate_private_key(ec.SECP256R1())
            csr = _rekey(csr, server_key)
        plan = self._authorize(call, principal, label_name, label, csr)
        if label.manual_approval and call.operation != "simplereenroll":
            return self._with_approval(plan, label, server_key)
        outcome = self._issue(plan, server_key)
        if recipient is not None and outcome.private_key_der is not None:
            signer_key, signer_chain = self._tls_signer()
            outcome = replace(outcome, private_key_der=keyprotect.protect(
                outcome.private_key_der, recipient, signer_key, signer_chain), key_encrypted=True)
        return outcome

    def _tls_signer(self) -> tuple[Any, list[x509.Certificate]]:
        """The EST server's TLS identity signs server-generated keys (§4.4.2)."""
        if self._signer is None:
            cert_path, key_path = self.dep.tls_files
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            self._signer = (key, x509.load_pem_x509_certificates(cert_path.read_bytes()))
        return self._signer

    def _authenticate(self, call: EnrollCall, label: LabelSettings) -> Principal:
        """§3.3.2 / §4.2.2: re-enrollment needs the certificate being renewed; enrollment takes an RA
        certificate, else Basic (pipeline or device secret), else a client certificate."""
        principal: Principal | None = None
        if call.operation == "simplereenroll":
            if call.client_cert is None:
                raise PKIError(ErrorKind.UNAUTHORIZED, "re-enrollment needs the current certificate as TLS "
                                                       "client certificate (RFC 7030 §4.2.2)")
            principal = self.auth.client_cert(call.client_cert)
        else:
            if call.client_cert is not None and self.auth.is_ra(call.client_cert):
                principal = self.auth.client_cert(call.client_cert)
            elif call.basic is not None:
                principal = self.auth.basic(*call.basic, checked=call.basic_checked)
            elif call.client_cert is not None:
                principal = self.auth.client_cert(call.client_cert)
        if principal is None:
            raise PKIError(ErrorKind.UNAUTHORIZED, "authentication required (HTTP Basic or TLS client certificate)")
        if AUTH_METHOD[principal.kind] not in label.auth:
            raise PKIError(ErrorKind.FORBIDDEN, f"{AUTH_METHOD[principal.kind]} authentication is not allowed "
                                                "for this label")
        return principal

    def _authorize(self, call: EnrollCall, principal: Principal, label_name: str, label: LabelSettings,
                   csr: CertificationRequest) -> _Plan:
        lifetime = timedelta(hours=label.lifetime_hours) if label.lifetime_hours else None
        plan = _Plan(principal, label_name, label.profile, csr, None, None, None, None, lifetime, call.source)
        kind = principal.kind
        if call.operation == "simplereenroll":  # also for an RA renewing its own certificate
            return self._for_renewal(plan, call)
        if self.auth.is_ra_subject(csr.subject):
            raise PKIError(ErrorKind.FORBIDDEN, "this subject is reserved for RA certificates (issued by an operator)")
        if kind is PrincipalKind.DEVICE:
            return self._for_registration(plan, principal.registration)
        pipeline = principal.pipeline
        if pipeline is not None and pipeline.labels and label_name not in pipeline.labels:
            raise PKIError(ErrorKind.FORBIDDEN, f"pipeline {principal.name} may not use label {label_name}")
        if kind is PrincipalKind.RA or (pipeline is not None and pipeline.registered_only):
            return self._for_registration(plan, self._registration_of(csr))
        if kind is PrincipalKind.PIPELINE:
            return plan
        return self._for_renewal(plan, call)

    def _registration_of(self, csr: CertificationRequest) -> Registration:
        """RA mode: the device is named by the CSR subject's serialNumber, else its commonName."""
        for oid in (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME):
            attrs = csr.subject.get_attributes_for_oid(oid)
            if attrs:
                registration = self.registrations.get(str(attrs[0].value))
                if registration is not None:
                    return registration
        raise PKIError(ErrorKind.FORBIDDEN, "no MDM registration for this device (CSR subject serialNumber or CN)")

    def _for_registration(self, plan: _Plan, registration: Registration | None) -> _Plan:
        """A device may obtain only what was registered: its profile and SANs ⊆ the registered ones."""
        assert registration is not None
        now = self.dep.clock.now()
        if registration.expires_at <= now:
            raise PKIError(ErrorKind.FORBIDDEN, f"the registration of device {registration.device_id} has expired")
        if registration.used and registration.serial is not None:
            raise PKIError(ErrorKind.FORBIDDEN, f"device {registration.device_id} has already enrolled")
        if registration.profile != plan.profile:
            raise PKIError(ErrorKind.FORBIDDEN, f"device {registration.device_id} is registered for profile "
                                                f"{registration.profile}, not {plan.profile}")
        allowed = set(registration.sans)
        requested = [san_text(n) for n in plan.csr.sans]
        outside = [s for s in requested if s not in allowed]
        if outside:
            raise PKIError(ErrorKind.FORBIDDEN, f"not registered for device {registration.device_id}: "
                                                + ", ".join(outside))
        replace_sans = None if requested else tuple(registration.general_names())
        # the registered device id may name the device (CN or serialNumber); nothing else of the subject
        grants = (x509.NameAttribute(NameOID.COMMON_NAME, registration.device_id[:64]),
                  x509.NameAttribute(NameOID.SERIAL_NUMBER, registration.device_id[:64]))
        return replace(plan, registration=registration, replace_sans=replace_sans, grants=grants,
                       device_id=registration.device_id, ek_fingerprint=registration.ek_fingerprint)

    def _for_renewal(self, plan: _Plan, call: EnrollCall) -> _Plan:
        """§4.2.2: the new request must carry the same subject and subjectAltName as the presented
        certificate; the new certificate keeps its profile, subject and device binding. The subject
        is compared after the CA's subject policy: attributes dropped at the first issuance (a
        client re-sending its original DN) are dropped again, anything new is refused."""
        info = plan.principal.cert_info
        assert info is not None and call.client_cert is not None
        old = call.client_cert
        grants = tuple(old.subject)
        if self.dep.authority.subject_for(info.profile, plan.csr.subject, plan.csr.sans, grants)[0] != old.subject:
            raise PKIError(ErrorKind.FORBIDDEN, "CSR subject differs from the client certificate (RFC 7030 §4.2.2)")
        if {san_text(n) for n in plan.csr.sans} != set(info.sans):
            raise PKIError(ErrorKind.FORBIDDEN, "CSR subjectAltName differs from the client certificate "
                                                "(RFC 7030 §4.2.2)")
        return replace(plan, profile=info.profile, device_id=info.device_id, ek_fingerprint=info.ek_fingerprint,
                       grants=grants)

    # -- issuance -----------------------------------------------------------------------------

    def _issue(self, plan: _Plan, server_key: ec.EllipticCurvePrivateKey | None) -> EnrollOutcome:
        registration = plan.registration
        claim = None
        if registration is not None:
            secret = plan.principal.secret_sha256 if plan.principal.kind is PrincipalKind.DEVICE else None
            claim = self.registrations.claim(registration.device_id, secret, self.dep.clock.now(),
                                             plan.principal.display,
                                             timedelta(seconds=self.settings.claim_timeout_seconds))
            if claim is None:
                raise PKIError(ErrorKind.FORBIDDEN, f"the registration of device {registration.device_id} "
                                                    "was already used")
        try:
            issued = self.dep.authority.issue(IssuanceRequest(
                csr=plan.csr, profile=plan.profile, lifetime=plan.lifetime, replace_sans=plan.replace_sans,
                requester=Requester(CHANNEL, plan.principal.display, plan.source),
                device_id=plan.device_id, ek_fingerprint=plan.ek_fingerprint, subject_grants=plan.grants))
        except PKIError as exc:
            if claim is not None and registration is not None and exc.kind in _RELEASE_ON:
                self.registrations.release(registration.device_id, claim)
            raise
        if claim is not None and registration is not None:
            self.registrations.finalize(registration.device_id, claim, issued.serial)
        key_der = None
        if server_key is not None:
            key_der = server_key.private_bytes(Encoding.DER, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption())
        return EnrollOutcome(issued=issued, private_key_der=key_der)

    def _with_approval(self, plan: _Plan, label: LabelSettings,
                       server_key: ec.EllipticCurvePrivateKey | None) -> EnrollOutcome:
        """§4.2.3: 202 + Retry-After until an operator approves; the client re-sends the same request."""
        if server_key is not None:
            raise PKIError(ErrorKind.BAD_REQUEST, "serverkeygen is not available on labels needing approval")
        key = hashlib.sha256(b"\0".join([plan.label.encode(), plan.principal.display.encode(),
                                         plan.csr.der])).hexdigest()
        pending = self.registrations.pending_for(key)
        if pending is None:
            sans = [san_text(n) for n in (plan.replace_sans or plan.csr.sans)]
            pending = self.registrations.add_pending(key, plan.label, plan.principal.display, plan.device_id,
                                                     plan.csr.subject.rfc4514_string(), sans, plan.csr.der,
                                                     self.dep.clock.now())
            self.dep.audit.append(self.dep.clock.now(), plan.principal.display, "est-pending", CHANNEL,
                                  pending=pending.id, label=plan.label, identities=sans)
        if pending.status == "rejected":
            raise PKIError(ErrorKind.FORBIDDEN, f"enrollment {pending.id} was rejected by an operator")
        if pending.status == "issued" and pending.serial is not None:
            info = self.dep.store.get(pending.serial)
            if info is not None:
                issuer = self.dep.issuers[info.issuer_id]
                return EnrollOutcome(issued=IssuedCertificate(info, info.certificate(), issuer.chain_for_leaf()))
        if pending.status == "approved" and self.registrations.take_approved(pending.id):
            try:
                outcome = self._issue(plan, None)
            except Exception:
                self.registrations.finish_pending(pending.id, None)
                raise
            assert outcome.issued is not None
            self.registrations.finish_pending(pending.id, outcome.issued.serial)
            return outcome
        return EnrollOutcome(retry_after=label.retry_after_seconds, pending_id=pending.id)


def _rekey(csr: CertificationRequest, key: ec.EllipticCurvePrivateKey) -> CertificationRequest:
    """§4.4.1: the server generates the key; the certificate gets the request's subject and SANs."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    sans = csr.sans
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return parse_csr(builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER))
