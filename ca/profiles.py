"""Certificate profiles: what each kind of identity certificate looks like (RFC 5280 §4.2).

End-entity profiles (``machine``, ``user``, ``gateway``) carry EKU id-kp-ipsecIKE
(RFC 4945 §5.1.3.12) plus clientAuth (and serverAuth for gateways); ``radius`` is serverAuth
only, for RADIUS/EAP servers that present it in EAP-TLS/PEAP/TTLS. The internal profiles
(``tls-server``, ``ocsp-signer``, ``push-signer``, ``scep-ra``) are issued by ikepki to itself.
Each profile is marked in the certificate by a certificate-policy OID under ikepki's arc so
relying parties (the bundled responder) can map certificates to policy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ca.errors import ErrorKind, PKIError
from ca.oids import PROFILE_POLICY_ARC, PUSH_SIGNER_EKU

EKU_IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
OID_PERMANENT_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.8.3")  # RFC 4043
OID_HARDWARE_MODULE_NAME = ObjectIdentifier("1.3.6.1.5.5.7.8.4")  # RFC 4108
OID_OCSP_NOCHECK = ObjectIdentifier("1.3.6.1.5.5.7.48.1.5")  # RFC 6960 §4.2.2.2.1
EKU_TCG_AIK_CERTIFICATE = ObjectIdentifier("2.23.133.8.3")  # TCG EK Credential Profile §3.2.17 tcg-kp-AIKCertificate
MAX_SANS = 32
MAX_SAN_LENGTH = 255
MAX_SUBJECT_ATTR = 64  # RFC 5280 Appendix A ub-common-name
MAX_DROPPED_REPORTED = 16  # dropped subject attributes named in one audit line
ANY_VALUE = "*"  # in a profile's subject policy: any (bounded) value, for display-only attributes

# Subject attributes a certificate may carry at all, by the names used in configuration.
SUBJECT_ATTRIBUTES: dict[str, ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER}

# SAN kinds a profile may allow
SAN_DNS, SAN_IP, SAN_EMAIL = "dns", "ip", "email"
SAN_PERMANENT_ID, SAN_HW_MODULE = "permanent-identifier", "hardware-module"
SAN_URI = "uri"  # user certificates: the IdP identity <iss>#<sub> (ca.model.UserIdentity.uri)
SAN_DIRECTORY = "directory-name"


@dataclass(frozen=True)
class Profile:
    name: str
    policy_oid: ObjectIdentifier
    default_lifetime: timedelta
    max_lifetime: timedelta
    ekus: tuple[ObjectIdentifier, ...]
    allowed_sans: frozenset[str]
    require_san: bool = True
    issuer: str = "ec"  # which issuing CA signs it (ceremony issuer id)
    enrollable: bool = True  # may be requested over ACME/EST/SCEP
    extra_critical: tuple[x509.ExtensionType, ...] = field(default=())
    # Subject attribute values a requester may ask for (configuration ``profiles.<name>.subject``);
    # empty: none beyond what the registration/authorization granted (see :func:`build_subject`).
    subject_values: Mapping[ObjectIdentifier, frozenset[str]] = field(default_factory=dict)
    # What the certificate carries besides the profile's EKUs (RFC 5280 §4.2), decided here, never by name:
    key_encipherment: bool = False  # keyUsage keyEncipherment (an RA that decrypts CMS EnvelopedData)
    ocsp_nocheck: bool = False  # id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): a delegated OCSP signer
    revocation_pointers: bool = True  # AIA (OCSP, caIssuers), CRL DP and Freshest CRL (RFC 5280 §4.2.2.1, §4.2.1.13)

    def lifetime(self, requested: timedelta | None) -> timedelta:
        """Requested lifetime, bounded by the profile maximum; the default when not requested."""
        if requested is None:
            return self.default_lifetime
        if requested <= timedelta(0):
            raise PKIError(ErrorKind.BAD_REQUEST, "requested lifetime must be positive")
        return min(requested, self.max_lifetime)


def _policy(n: int) -> ObjectIdentifier:
    return ObjectIdentifier(f"{PROFILE_POLICY_ARC}.{n}")


_H, _D = timedelta(hours=1), timedelta(days=1)
BUILTIN_PROFILES: dict[str, Profile] = {
    p.name: p for p in (
        Profile("machine", _policy(1), 24 * _H, 7 * _D, (EKU_IPSEC_IKE, ExtendedKeyUsageOID.CLIENT_AUTH),
                frozenset({SAN_DNS, SAN_IP, SAN_PERMANENT_ID, SAN_HW_MODULE})),
        Profile("user", _policy(2), 8 * _H, 2 * _D, (EKU_IPSEC_IKE, ExtendedKeyUsageOID.CLIENT_AUTH),
                frozenset({SAN_EMAIL, SAN_URI})),
        Profile("gateway", _policy(3), 30 * _D, 90 * _D,
                (EKU_IPSEC_IKE, ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
                frozenset({SAN_DNS, SAN_IP})),
        Profile("tls-server", _policy(4), 90 * _D, 397 * _D, (ExtendedKeyUsageOID.SERVER_AUTH,),
                frozenset({SAN_DNS, SAN_IP}), enrollable=False),
        Profile("ocsp-signer", _policy(5), 2 * _D, 7 * _D, (ExtendedKeyUsageOID.OCSP_SIGNING,),
                frozenset(), require_san=False, enrollable=False, ocsp_nocheck=True, revocation_pointers=False),
        Profile("push-signer", _policy(6), 30 * _D, 397 * _D,
                (PUSH_SIGNER_EKU,),
                frozenset(), require_san=False, enrollable=False),
        Profile("scep-ra", _policy(7), 365 * _D, 3 * 365 * _D, (), frozenset(), require_san=False,
                enrollable=False, issuer="rsa", key_encipherment=True),
        # RADIUS / EAP servers (EAP-TLS, PEAP, TTLS): serverAuth only; clients check it against their EAP
        # server name (strongSwan aaa_id, wpa_supplicant domain_match), so DNS/IP SANs (RFC 5216 §5.2)
        Profile("radius", _policy(9), 90 * _D, 397 * _D, (ExtendedKeyUsageOID.SERVER_AUTH,),
                frozenset({SAN_DNS, SAN_IP})),
        # TPM attestation-key certificates (TCG AK profile: EKU 2.23.133.8.3, empty subject, critical SAN with
        # the TPM dirName, PermanentIdentifier and HardwareModuleName), signed by the attestation CA through
        # Authority.issue_internal (enrollment.attestation.ak_cert builds the names); no AIA/CDP, as before
        Profile("attestation-ak", _policy(8), 7 * _D, 30 * _D, (EKU_TCG_AIK_CERTIFICATE,),
                frozenset({SAN_DIRECTORY, SAN_PERMANENT_ID, SAN_HW_MODULE}), require_san=True, enrollable=False,
                issuer="attestation", revocation_pointers=False),
    )
}


def profile_name_for_policy(oid: ObjectIdentifier) -> str | None:
    return next((p.name for p in BUILTIN_PROFILES.values() if p.policy_oid == oid), None)


def with_lifetimes(profiles: dict[str, Profile], overrides: dict[str, dict[str, timedelta]]) -> dict[str, Profile]:
    """Apply configured ``default_lifetime``/``max_lifetime``; the default never exceeds the max."""
    out = dict(profiles)
    for name, values in overrides.items():
        if name not in out:
            raise PKIError(ErrorKind.CONFIG, f"unknown profile {name!r} in configuration")
        prof = replace(out[name], **values)  # type: ignore[arg-type]
        if prof.default_lifetime > prof.max_lifetime:
            raise PKIError(ErrorKind.CONFIG, f"profile {name}: default lifetime exceeds maximum")
        out[name] = prof
    return out


def with_subject_policies(profiles: dict[str, Profile],
                          policies: Mapping[str, Mapping[ObjectIdentifier, frozenset[str]]]) -> dict[str, Profile]:
    """Apply configured subject policies (``profiles.<name>.subject``)."""
    out = dict(profiles)
    for name, policy in policies.items():
        if name not in out:
            raise PKIError(ErrorKind.CONFIG, f"unknown profile {name!r} in configuration")
        out[name] = replace(out[name], subject_values=dict(policy))
    return out


def subject_policy_from_config(profile: str, config: Mapping[str, Sequence[str]]
                               ) -> dict[ObjectIdentifier, frozenset[str]]:
    """``{O: [Example], OU: [vpn-staff]}`` -> OID -> allowed values. Fails closed on unknown names."""
    out: dict[ObjectIdentifier, frozenset[str]] = {}
    for name, values in config.items():
        oid = SUBJECT_ATTRIBUTES.get(name)
        if oid is None:
            raise PKIError(ErrorKind.CONFIG, f"profiles.{profile}.subject: unknown subject attribute {name!r} "
                                             f"(one of {', '.join(SUBJECT_ATTRIBUTES)})")
        if isinstance(values, str) or not all(isinstance(v, str) and 0 < len(v) <= MAX_SUBJECT_ATTR
                                               for v in values):
            raise PKIError(ErrorKind.CONFIG, f"profiles.{profile}.subject.{name}: a list of values "
                                             f"(1-{MAX_SUBJECT_ATTR} characters each)")
        out[oid] = frozenset(values)
    return out


def identifier_values(sans: Iterable[x509.GeneralName]) -> set[str]:
    """The authorized identifiers a commonName may repeat (RFC 8555 §7.4 / CA/B BR 7.1.4.3 style):
    DNS names, IP addresses and email addresses, compared case-insensitively."""
    out: set[str] = set()
    for name in sans:
        if isinstance(name, x509.DNSName | x509.RFC822Name):
            out.add(name.value.casefold())
        elif isinstance(name, x509.IPAddress):
            out.add(str(name.value))
    return out


def build_subject(profile: Profile, requested: x509.Name, sans: Sequence[x509.GeneralName],
                  grants: Iterable[x509.NameAttribute] = ()) -> tuple[x509.Name, list[str]]:
    """The certificate subject (RFC 5280 §4.1.2.6) the CA decides for a request; and what was dropped.

    A requested attribute is kept only if (a) a registration or authorization granted exactly
    that attribute and value (``grants``: CA-controlled data such as an MDM registration or the
    certificate being renewed), (b) the profile allows that value (``subject_values``; ``*``: any
    value, for display-only attributes a relying party never maps to a role), or (c) it
    is a commonName equal to one of the certificate's (already authorized) identifiers. Anything
    else is dropped, as Boulder builds the subject from authorized identifiers only, so a
    requester can never choose an attribute a relying party maps to a role (``OU=vpn-admin``).
    Grants permit; they never add attributes the request did not ask for. Kept values are
    bounded (RFC 5280 Appendix A upper bounds; countryName exactly 2 characters)."""
    granted = {(a.oid, _text(a.value)) for a in grants}
    identifiers = identifier_values(sans)
    kept: list[x509.NameAttribute] = []
    dropped: list[str] = []
    for attr in requested:
        value = _text(attr.value)
        allowed = profile.subject_values.get(attr.oid, frozenset())
        ok = attr.oid in SUBJECT_ATTRIBUTES.values() and (
            (attr.oid, value) in granted or value in allowed or ANY_VALUE in allowed
            or (attr.oid == NameOID.COMMON_NAME and value.casefold() in identifiers))
        if not ok:
            if len(dropped) < MAX_DROPPED_REPORTED:
                dropped.append(_describe(attr.oid, value))
            continue
        if not value or len(value) > MAX_SUBJECT_ATTR or (attr.oid == NameOID.COUNTRY_NAME and len(value) != 2):
            raise PKIError(ErrorKind.BAD_CSR, f"subject attribute {_describe(attr.oid, value)} has an invalid length")
        kept.append(x509.NameAttribute(attr.oid, value))
    return x509.Name(kept), dropped


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _describe(oid: ObjectIdentifier, value: str) -> str:
    name = next((k for k, v in SUBJECT_ATTRIBUTES.items() if v == oid), oid.dotted_string)
    return f"{name}={value[:MAX_SUBJECT_ATTR]}"


def san_kind(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return SAN_DNS
    if isinstance(name, x509.IPAddress):
        return SAN_IP
    if isinstance(name, x509.RFC822Name):
        return SAN_EMAIL
    if isinstance(name, x509.UniformResourceIdentifier):
        return SAN_URI
    if isinstance(name, x509.OtherName) and name.type_id == OID_PERMANENT_IDENTIFIER:
        return SAN_PERMANENT_ID
    if isinstance(name, x509.OtherName) and name.type_id == OID_HARDWARE_MODULE_NAME:
        return SAN_HW_MODULE
    if isinstance(name, x509.DirectoryName):
        return SAN_DIRECTORY
    return type(name).__name__


def san_text(name: x509.GeneralName) -> str:
    """A stable textual form used in the store, audit lines and push events."""
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value.lower()}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.OtherName):
        kind = san_kind(name)
        return f"{kind}:{name.value.hex()}"
    return f"{type(name).__name__}:{name.value}"


def check_sans(profile: Profile, sans: list[x509.GeneralName]) -> None:
    """Refuse SANs the profile forbids, malformed values, and too many names."""
    if len(sans) > MAX_SANS:
        raise PKIError(ErrorKind.REJECTED_IDENTIFIER, f"at most {MAX_SANS} subject alternative names")
    if profile.require_san and not sans:
        raise PKIError(ErrorKind.REJECTED_IDENTIFIER, f"profile {profile.name} requires a subject alternative name")
    for name in sans:
        kind = san_kind(name)
        if kind not in profile.allowed_sans:
            raise PKIError(ErrorKind.REJECTED_IDENTIFIER,
                           f"profile {profile.name} does not allow {kind} names ({san_text(name)})")
        _check_value(name)


def _check_value(name: x509.GeneralName) -> None:
    if isinstance(name, x509.DNSName):
        value = name.value
        labels = value.split(".")
        if (len(value) > MAX_SAN_LENGTH or value.startswith("*") or not all(labels)
                or not all(ch.isalnum() or ch in "-." for ch in value) or any(lbl.startswith("-") for lbl in labels)):
            raise PKIError(ErrorKind.REJECTED_IDENTIFIER, f"invalid DNS name {value!r}")
    elif isinstance(name, x509.RFC822Name):
        local, at, domain = name.value.partition("@")
        if not at or not local or not domain or len(name.value) > MAX_SAN_LENGTH or " " in name.value:
            raise PKIError(ErrorKind.REJECTED_IDENTIFIER, f"invalid email address {name.value!r}")
    elif isinstance(name, x509.UniformResourceIdentifier):
        scheme, colon, rest = name.value.partition(":")
        if (not colon or not scheme.isalpha() or not rest or len(name.value) > 1024
                or any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in name.value)):
            raise PKIError(ErrorKind.REJECTED_IDENTIFIER, f"invalid URI {name.value[:80]!r}")
    elif isinstance(name, x509.IPAddress) and not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise PKIError(ErrorKind.REJECTED_IDENTIFIER, "IP networks are not allowed as names")
