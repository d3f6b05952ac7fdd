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
from dataclasses import dataclass, field, replace
from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ca.errors import ErrorKind, PKIError
from ca.oids import PROFILE_POLICY_ARC, PUSH_SIGNER_EKU

EKU_IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
OID_PERMANENT_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.8.3")  # RFC 4043
OID_HARDWARE_MODULE_NAME = ObjectIdentifier("1.3.6.1.5.5.7.8.4")  # RFC 4108
OID_OCSP_NOCHECK = ObjectIdentifier("1.3.6.1.5.5.7.48.1.5")  # RFC 6960 §4.2.2.2.1
MAX_SANS = 32
MAX_SAN_LENGTH = 255

# SAN kinds a profile may allow
SAN_DNS, SAN_IP, SAN_EMAIL = "dns", "ip", "email"
SAN_PERMANENT_ID, SAN_HW_MODULE = "permanent-identifier", "hardware-module"


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
                frozenset({SAN_EMAIL})),
        Profile("gateway", _policy(3), 30 * _D, 90 * _D,
                (EKU_IPSEC_IKE, ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
                frozenset({SAN_DNS, SAN_IP})),
        Profile("tls-server", _policy(4), 90 * _D, 397 * _D, (ExtendedKeyUsageOID.SERVER_AUTH,),
                frozenset({SAN_DNS, SAN_IP}), enrollable=False),
        Profile("ocsp-signer", _policy(5), 2 * _D, 7 * _D, (ExtendedKeyUsageOID.OCSP_SIGNING,),
                frozenset(), require_san=False, enrollable=False),
        Profile("push-signer", _policy(6), 30 * _D, 397 * _D,
                (PUSH_SIGNER_EKU,),
                frozenset(), require_san=False, enrollable=False),
        Profile("scep-ra", _policy(7), 365 * _D, 3 * 365 * _D, (), frozenset(), require_san=False,
                enrollable=False, issuer="rsa"),
        # RADIUS / EAP servers (EAP-TLS, PEAP, TTLS): serverAuth only; clients check it against their EAP
        # server name (strongSwan aaa_id, wpa_supplicant domain_match), so DNS/IP SANs (RFC 5216 §5.2)
        Profile("radius", _policy(9), 90 * _D, 397 * _D, (ExtendedKeyUsageOID.SERVER_AUTH,),
                frozenset({SAN_DNS, SAN_IP})),
        # TPM attestation-key certificates: built by enrollment.attestation.ak_cert (TCG AK profile, EKU
        # 2.23.133.8.3), signed by the attestation CA, recorded under this name (never via Authority.issue)
        Profile("attestation-ak", _policy(8), 7 * _D, 30 * _D, (), frozenset({SAN_PERMANENT_ID, SAN_HW_MODULE}),
                require_san=False, enrollable=False, issuer="attestation"),
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


def san_kind(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return SAN_DNS
    if isinstance(name, x509.IPAddress):
        return SAN_IP
    if isinstance(name, x509.RFC822Name):
        return SAN_EMAIL
    if isinstance(name, x509.OtherName) and name.type_id == OID_PERMANENT_IDENTIFIER:
        return SAN_PERMANENT_ID
    if isinstance(name, x509.OtherName) and name.type_id == OID_HARDWARE_MODULE_NAME:
        return SAN_HW_MODULE
    return type(name).__name__


def san_text(name: x509.GeneralName) -> str:
    """A stable textual form used in the store, audit lines and push events."""
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value.lower()}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
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
    elif isinstance(name, x509.IPAddress) and not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise PKIError(ErrorKind.REJECTED_IDENTIFIER, "IP networks are not allowed as names")
