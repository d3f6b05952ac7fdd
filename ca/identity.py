"""IKEv2 identities (RFC 7296 §3.5) and how they bind to certificates (RFC 4945 §3.1).

One rule book for issuance (which SAN does an identity need) and for a relying party
(does this IDi/IDr payload match this certificate). Pure: only ``cryptography.x509``.

| ID type          | matches                                       | RFC 4945 |
|------------------|-----------------------------------------------|----------|
| ID_IPV4_ADDR (1) | iPAddress SAN, same 4 octets                  | §3.1.1   |
| ID_FQDN (2)      | dNSName SAN, case-insensitive, no wildcards   | §3.1.2   |
| ID_RFC822 (3)    | rfc822Name SAN (domain part case-insensitive) | §3.1.3   |
| ID_IPV6_ADDR (5) | iPAddress SAN, same 16 octets                 | §3.1.1   |
| ID_DER_ASN1_DN(9)| subject DN (DER-equal) or a directoryName SAN | §3.1.5   |
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum

from asn1crypto.x509 import Name as Asn1Name
from cryptography import x509

_IPS = (ipaddress.IPv4Address, ipaddress.IPv6Address)


class IdType(IntEnum):
    """RFC 7296 §3.5 ID Type values used for certificate identities."""

    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9


class IdentityError(ValueError):
    """The identity is malformed for its type."""


@dataclass(frozen=True)
class Identity:
    """An IKEv2 identity: type and the ID payload's identification data."""

    id_type: IdType
    data: bytes

    def __str__(self) -> str:
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("utf-8", "replace")
        if self.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        return dn_text(self.data)


_SHORT = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
          "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "0.9.2342.19200300.100.1.25": "DC",
          "0.9.2342.19200300.100.1.1": "UID", "1.2.840.113549.1.9.1": "emailAddress"}


def _escape(value: str) -> str:
    out = value.replace("\\", "\\\\")
    for ch in ',+"<>;=':
        out = out.replace(ch, "\\" + ch)
    return out


def dn_text(der: bytes) -> str:
    """RFC 4514 string of a DER Name (last RDN first, like cryptography's ``rfc4514_string``);
    hex if it does not parse."""
    try:
        rdns = Asn1Name.load(der).chosen
        parts = ["+".join(f"{_SHORT.get(atv['type'].dotted, atv['type'].dotted)}={_escape(str(atv['value'].native))}"
                          for atv in rdn) for rdn in reversed(list(rdns))]
        return ",".join(parts)
    except (ValueError, TypeError, KeyError):
        return der.hex()


def dn_equal(a: bytes, b: bytes) -> bool:
    """RFC 5280 §7.1 name comparison (string types and case/space differences ignored), which
    RFC 4945 §3.1.5 asks for: peers encode the same DN as PrintableString or UTF8String."""
    if a == b:
        return True
    try:
        return bool(Asn1Name.load(a) == Asn1Name.load(b))
    except (ValueError, TypeError):
        return False


def parse_identity(text: str) -> Identity:
    """Parse the usual textual forms: an IP address, ``user@host``, an FQDN, or an RFC 4514 DN."""
    try:
        ip = ipaddress.ip_address(text)
        return Identity(IdType.IPV4_ADDR if ip.version == 4 else IdType.IPV6_ADDR, ip.packed)
    except ValueError:
        pass
    if "=" in text:
        return Identity(IdType.DER_ASN1_DN, x509.Name.from_rfc4514_string(text).public_bytes())
    if "@" in text:
        return Identity(IdType.RFC822_ADDR, text.encode())
    return Identity(IdType.FQDN, text.encode())


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _email_equal(a: str, b: str) -> bool:
    la, _, da = a.rpartition("@")
    lb, _, db = b.rpartition("@")
    return la == lb and da.lower() == db.lower()


def identity_matches(identity: Identity, cert: x509.Certificate) -> bool:
    """True when ``identity`` is bound to ``cert`` per RFC 4945 §3.1 (table above)."""
    sans = _sans(cert)
    try:
        if identity.id_type == IdType.DER_ASN1_DN:
            # an empty DN: strongSwan sends the empty Name (DER 30 00) as zero octets; it can only name a
            # certificate whose subject is empty (TPM device certificates: identity in otherName SANs only)
            data = identity.data or x509.Name([]).public_bytes()
            names = [cert.subject, *(sans.get_values_for_type(x509.DirectoryName) if sans else [])]
            return any(dn_equal(data, n.public_bytes()) for n in names)
        if sans is None:
            return False
        if identity.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            ips = sans.get_values_for_type(x509.IPAddress)
            return any(isinstance(ip, _IPS) and ip.packed == identity.data for ip in ips)
        text = identity.data.decode("ascii")
    except (UnicodeDecodeError, ValueError):
        return False
    if identity.id_type == IdType.FQDN:
        return any(d.lower() == text.lower().rstrip(".") for d in sans.get_values_for_type(x509.DNSName))
    if identity.id_type == IdType.RFC822_ADDR:
        return any(_email_equal(e, text) for e in sans.get_values_for_type(x509.RFC822Name))
    return False


def san_for_identity(identity: Identity) -> x509.GeneralName:
    """The SAN an issuer must put into a certificate so that ``identity`` matches it."""
    if identity.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        return x509.IPAddress(ipaddress.ip_address(identity.data))
    if identity.id_type == IdType.FQDN:
        return x509.DNSName(identity.data.decode("ascii").lower())
    if identity.id_type == IdType.RFC822_ADDR:
        return x509.RFC822Name(identity.data.decode("ascii"))
    raise IdentityError("a DN identity is bound through the subject, not a SAN")


def identities_of(cert: x509.Certificate) -> list[Identity]:
    """Every identity the certificate can authenticate, subject DN first."""
    out = [Identity(IdType.DER_ASN1_DN, cert.subject.public_bytes())]
    sans = _sans(cert)
    if sans is None:
        return out
    out += [Identity(IdType.FQDN, d.encode()) for d in sans.get_values_for_type(x509.DNSName)]
    out += [Identity(IdType.RFC822_ADDR, e.encode()) for e in sans.get_values_for_type(x509.RFC822Name)]
    for ip in sans.get_values_for_type(x509.IPAddress):
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            out.append(Identity(IdType.IPV4_ADDR if ip.version == 4 else IdType.IPV6_ADDR, ip.packed))
    return out
