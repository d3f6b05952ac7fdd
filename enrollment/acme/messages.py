"""Wire forms of ACME resources (RFC 8555 §7.1) and parsing of client-supplied fields."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ca.device_identity import (
    ID_ON_PERMANENT_IDENTIFIER,
    HardwareModuleName,
    PermanentIdentifier,
    device_general_name,
    parse_device_identifier,
)
from enrollment.acme.model import Account, Authz, Challenge, Identifier, Order
from enrollment.acme.problems import AcmeProblem, malformed

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_CONTACTS = 5
MAX_CONTACT_LEN = 255
DEVICE_TYPES = frozenset({"permanent-identifier", "hardware-module"})  # draft-ietf-acme-device-attest-09
DEVICE_PATTERN = "device:*"  # EAB policy pattern allowing every device identifier


class Urls:
    """Resource URLs under the ACME base (``https://host/acme``)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def __getattr__(self, name: str) -> str:  # directory entries: new_nonce -> /new-nonce
        return f"{self.base}/{name.replace('_', '-')}"

    def account(self, account_id: str) -> str:
        return f"{self.base}/acct/{account_id}"

    def order(self, order_id: str) -> str:
        return f"{self.base}/order/{order_id}"

    def authz(self, authz_id: str) -> str:
        return f"{self.base}/authz/{authz_id}"

    def challenge(self, challenge_id: str) -> str:
        return f"{self.base}/chall/{challenge_id}"

    def cert(self, serial_hex: str) -> str:
        return f"{self.base}/cert/{serial_hex}"


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise malformed(f"{what} must be an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise malformed(f"{what} must be an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise malformed(f"{what} needs a time zone offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is after datetime.max in UTC
        raise malformed(f"{what} is out of range") from None


def account_json(account: Account, urls: Urls) -> dict[str, Any]:
    out: dict[str, Any] = {"status": account.status, "contact": account.contact, "key": account.jwk,
                           "orders": f"{urls.account(account.id)}/orders", "termsOfServiceAgreed": True,
                           "createdAt": rfc3339(account.created_at)}
    return out


def order_json(order: Order, urls: Urls) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": order.status, "expires": rfc3339(order.expires),
        "identifiers": [i.wire() for i in order.identifiers], "profile": order.profile,
        "authorizations": [urls.authz(a) for a in order.authz_ids], "finalize": f"{urls.order(order.id)}/finalize"}
    if order.not_before:
        out["notBefore"] = rfc3339(order.not_before)
    if order.not_after:
        out["notAfter"] = rfc3339(order.not_after)
    if order.replaces:
        out["replaces"] = order.replaces
    if order.error:
        out["error"] = order.error
    if order.status == "valid" and order.cert_serial:
        out["certificate"] = urls.cert(order.cert_serial)
    return out


def challenge_json(ch: Challenge, urls: Urls) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ch.type, "url": urls.challenge(ch.id), "status": ch.status, "token": ch.token}
    if ch.validated and ch.status == "valid":  # while processing the column holds the start time
        out["validated"] = rfc3339(ch.validated)
    if ch.error:
        out["error"] = ch.error
    return out


def authz_json(authz: Authz, challenges: list[Challenge], urls: Urls) -> dict[str, Any]:
    if authz.status == "valid":  # §7.1.4: once valid, list only the challenge that succeeded
        challenges = [c for c in challenges if c.status == "valid"] or challenges
    return {"identifier": authz.identifier.wire(), "status": authz.status, "expires": rfc3339(authz.expires),
            "challenges": [challenge_json(c, urls) for c in challenges]}


def parse_identifier(raw: Any) -> Identifier:
    """RFC 8555 §9.7.7 ``dns`` and RFC 8738 ``ip`` identifiers, normalised (lower case, canonical IP)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not isinstance(raw.get("value"), str):
        raise malformed("each identifier needs a string type and value")
    type_, value = raw["type"], raw["value"]
    if type_ == "dns":
        name = value.lower()
        labels = (name[2:] if name.startswith("*.") else name).split(".")
        if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(lbl) for lbl in labels):
            raise AcmeProblem("rejectedIdentifier", f"invalid DNS identifier {value[:80]!r}")
        return Identifier("dns", name)
    if type_ == "ip":
        try:
            return Identifier("ip", str(ipaddress.ip_address(value)))
        except ValueError:
            raise AcmeProblem("rejectedIdentifier", f"invalid IP identifier {value[:80]!r}") from None
    if type_ in DEVICE_TYPES:  # draft-ietf-acme-device-attest-09 §3.1, §4.1 (validated by the plug-in's parser)
        try:
            parse_device_identifier(type_, value)
        except (ValueError, UnicodeError):
            raise AcmeProblem("rejectedIdentifier", f"invalid {type_} identifier {value[:80]!r}") from None
        return Identifier(type_, value)
    raise AcmeProblem("unsupportedIdentifier", f"identifier type {type_[:32]!r} is not supported")


def general_name(ident: Identifier) -> x509.GeneralName:
    if ident.type == "dns":
        return x509.DNSName(ident.value)
    if ident.type in DEVICE_TYPES:  # RFC 4043 / RFC 4108 otherName (draft-ietf-acme-device-attest-09 §3.2, §4.2)
        return device_general_name(ident.type, ident.value)
    return x509.IPAddress(ipaddress.ip_address(ident.value))


def device_identifier(name: x509.OtherName) -> Identifier:
    """A CSR otherName SAN as an order identifier (permanent-identifier / hardware-module)."""
    try:
        if name.type_id == ID_ON_PERMANENT_IDENTIFIER:
            return Identifier("permanent-identifier", PermanentIdentifier.from_other_name(name).acme_value())
        return Identifier("hardware-module", HardwareModuleName.from_other_name(name).acme_value())
    except (ValueError, UnicodeError):
        raise AcmeProblem("badCSR", f"CSR contains an unsupported otherName {name.type_id.dotted_string}") from None


def parse_contacts(raw: Any) -> list[str]:
    """§7.3: contact URLs; only ``mailto:`` is supported."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_CONTACTS:
        raise AcmeProblem("invalidContact", f"contact must be a list of at most {MAX_CONTACTS} URLs")
    out = []
    for item in raw:
        if not isinstance(item, str) or len(item) > MAX_CONTACT_LEN:
            raise AcmeProblem("invalidContact", "contact entries must be short strings")
        if not item.startswith("mailto:"):
            raise AcmeProblem("unsupportedContact", "only mailto: contacts are supported")
        address = item[len("mailto:"):]
        if "@" not in address or "," in address or "?" in address or " " in address:
            raise AcmeProblem("invalidContact", f"invalid contact {item[:80]!r}")
        out.append(item)
    return out


ANY_PATTERN = "*"  # EAB policy pattern allowing every identifier: names, IPs and devices
PATTERN_FORMS = ("'*' (everything, TPM devices included), '*.example.test' (any name below it), an exact name "
                 "(h1.example.test, a@example.test), an IP (10.1.2.3), a CIDR (10.0.0.0/8), 'device:*' (any "
                 "attested TPM device) or one device's identifier")
MAX_PATTERN_LEN = 255


def parse_pattern(text: str) -> str:
    """One EAB identifier pattern, normalised (lower case). Raises :class:`ValueError` naming the
    forms that exist for anything else — e.g. ``laptop-*.corp.test`` (a ``*`` inside a label) or
    ``device:foo``."""
    p = text.strip().lower()
    if not p or len(p) > MAX_PATTERN_LEN or any(c.isspace() or not c.isprintable() for c in p):
        raise ValueError(f"invalid identifier pattern {text[:80]!r}: use {PATTERN_FORMS}")
    if p in (ANY_PATTERN, DEVICE_PATTERN):
        return p
    if p.startswith("device:"):
        raise ValueError(f"invalid identifier pattern {p[:80]!r}: the only device pattern is 'device:*' "
                         "(or a device's exact identifier); all forms: " + PATTERN_FORMS)
    if "*" in p and not (p.startswith("*.") and "*" not in p[1:] and len(p) > 2):
        raise ValueError(f"invalid identifier pattern {p[:80]!r}: '*' is allowed alone or as the whole first "
                         f"label ('*.example.test'); use {PATTERN_FORMS}")
    address, slash, _ = p.partition("/")
    if slash and _is_ip(address):
        try:
            ipaddress.ip_network(p, strict=False)
        except ValueError:
            raise ValueError(f"invalid CIDR {p[:80]!r}: use {PATTERN_FORMS}") from None
    return p


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def matches_pattern(ident: Identifier, pattern: str) -> bool:
    """EAB identifier policy (forms: :data:`PATTERN_FORMS`): ``*`` allows every identifier,
    ``*.example.test`` any name below, an exact name, an IP or a CIDR; ``device:*`` every
    attested device, or a device's exact identifier value."""
    pattern = pattern.strip().lower()
    if pattern == ANY_PATTERN:
        return True
    if ident.type == "ip":
        try:
            return ipaddress.ip_address(ident.value) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    if ident.type in DEVICE_TYPES:  # ``device:*`` (any attested device) or the exact identifier value
        return pattern in (DEVICE_PATTERN, ident.value.lower())
    if pattern.startswith("*."):
        return ident.value.endswith(pattern[1:]) and len(ident.value) > len(pattern) - 1
    return ident.value == pattern
