"""Domain objects of the CA core (frozen dataclasses; serials are ints, datetimes aware UTC)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.csr import CertificationRequest
from ca.errors import ErrorKind, PKIError


def parse_serial(text: str) -> int:
    """A serial from its wire form (hex, optional 0x and colons) to the int used in code."""
    cleaned = str(text).strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise PKIError(ErrorKind.BAD_REQUEST, f"not a hex serial: {str(text)[:50]!r}") from None
    if value <= 0 or value.bit_length() > 160:
        raise PKIError(ErrorKind.BAD_REQUEST, f"serial out of range: {str(text)[:50]!r}")
    return value


class RevocationReason(enum.Enum):
    """RFC 5280 §5.3.1 CRLReason names and codes (7 is unused)."""

    unspecified = 0
    keyCompromise = 1
    cACompromise = 2
    affiliationChanged = 3
    superseded = 4
    cessationOfOperation = 5
    certificateHold = 6
    removeFromCRL = 8
    privilegeWithdrawn = 9
    aACompromise = 10

    @classmethod
    def parse(cls, name: str) -> RevocationReason:
        for member in cls:
            if member.name.lower() == name.replace("-", "").replace("_", "").lower():
                return member
        raise ValueError(f"unknown revocation reason {name!r}; use one of: "
                         + ", ".join(m.name for m in cls if m is not cls.removeFromCRL))


class CertStatus(enum.Enum):
    valid = "valid"
    revoked = "revoked"
    hold = "hold"


@dataclass(frozen=True)
class Requester:
    """Who asked: the enrollment channel (acme, est, scep, cli, admin-api, ...) and principal."""

    channel: str
    principal: str
    source: str = ""


@dataclass(frozen=True)
class UserIdentity:
    """Who a ``user`` certificate belongs to at the identity provider (OpenID Connect Core §2:
    ``iss`` + ``sub`` identify the user; email and groups are what the provider said at issuance).
    ``groups`` are the provider's groups; ``roles`` the CA's mapping of them (gateway policy)."""

    issuer: str
    subject: str
    provider: str = ""
    email: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    device: str | None = None
    session: str | None = None  # the provider's ``sid`` (back-channel logout by session)

    @property
    def uri(self) -> str:
        """The identity as one URI (the certificate's URI SAN): ``<iss>#<sub>``, ``sub``
        percent-encoded. An OIDC issuer has no query or fragment (Core §2), so this is unambiguous."""
        from urllib.parse import quote

        return f"{self.issuer}#{quote(self.subject, safe='')}"

    @property
    def principal(self) -> str:
        """The person as requester and audit actor name them, in enrollment and in the console alike:
        ``oidc:<iss>#<sub>``."""
        return f"oidc:{self.uri}"


@dataclass(frozen=True)
class PostureMark:
    """A device posture verdict for the certificate: its policy OID (``ca.oids.POSTURE_*``) is added to
    certificatePolicies and notAfter is capped at ``evidence_expires``."""

    policy_oid: x509.ObjectIdentifier
    evidence_expires: datetime


@dataclass(frozen=True)
class IssuanceRequest:
    csr: CertificationRequest
    profile: str
    requester: Requester
    lifetime: timedelta | None = None
    extra_sans: tuple[x509.GeneralName, ...] = ()
    replace_sans: tuple[x509.GeneralName, ...] | None = None  # the validated identifiers (e.g. ACME order)
    device_id: str | None = None
    ek_fingerprint: str | None = None
    allow_internal: bool = False  # internal profiles (tls-server, ocsp-signer, ...) only from the core
    # Subject attributes CA-controlled data granted this request (an MDM registration, the
    # certificate being renewed): see ca.profiles.build_subject. Never taken from the CSR.
    subject_grants: tuple[x509.NameAttribute, ...] = ()
    replace_subject: x509.Name | None = None  # CA-controlled subject (e.g. roles from the IdP mapping)
    user: UserIdentity | None = None  # recorded with the certificate in the same transaction
    posture: PostureMark | None = None  # device posture verdict to carry (issue 17)


@dataclass(frozen=True)
class CertificateInfo:
    serial: int
    issuer_id: str
    subject: str
    sans: tuple[str, ...]
    profile: str
    not_before: datetime
    not_after: datetime
    status: CertStatus
    der: bytes
    requester: str = ""
    channel: str = ""
    revoked_at: datetime | None = None
    revocation_reason: RevocationReason | None = None
    invalidity_date: datetime | None = None
    device_id: str | None = None
    ek_fingerprint: str | None = None
    crl_entry_der: bytes | None = None

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True)
class IssuedCertificate:
    info: CertificateInfo
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = field(default=())  # issuing CA up to (excluding) the root

    @property
    def serial(self) -> int:
        return self.info.serial

    def pem_chain(self) -> bytes:
        """Leaf followed by its chain (RFC 8555 §9.1 order)."""
        return b"".join(c.public_bytes(Encoding.PEM) for c in (self.certificate, *self.chain))


@dataclass(frozen=True)
class RevocationRequest:
    serials: tuple[int, ...]
    reason: RevocationReason
    requester: Requester
    invalidity_date: datetime | None = None
    block_devices: bool = False


MAX_QUERY_OFFSET = 1_000_000_000  # a search offset beyond any real store (64-bit SQL integers)


@dataclass(frozen=True)
class CertificateQuery:
    """Search filter; every field narrows the result."""

    serial: int | None = None
    subject_contains: str | None = None
    san: str | None = None
    profile: str | None = None
    status: CertStatus | None = None
    device_id: str | None = None
    ek_fingerprint: str | None = None
    expires_before: datetime | None = None
    expires_after: datetime | None = None
    user: str | None = None  # ``<iss>#<sub>`` URI, the provider's ``sub``, or the email at issuance
    limit: int = 100
    offset: int = 0
