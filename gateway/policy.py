"""Authorization policy: which authenticated peers get which traffic selectors.

YAML shape::

    role_attribute: OU            # subject attribute read as the peer's role (name or OID); trust it only
                                  # if the CA decides it (ikepki: profiles.<name>.subject), never CN
    rules:
      - name: staff
        match:                    # every key given must match
          profile: 1.3.6.1.4.1.99999.2.1   # a certificate policy OID or an EKU OID
          san: ["*@example.test", "DNS:*.corp.test"]   # fnmatch, any SAN
          role: vpn-staff
        local_ts: ["10.97.1.0/24"]            # responder side (TSr)
        remote_ts: ["10.97.2.0/24[tcp/443]"]  # initiator side (TSi)
      - name: eap-staff
        match:
          radius_group: staff     # a Filter-Id or Class of the Access-Accept (fnmatch)
        require: [pubkey, eap]    # RFC 4739: machine certificate AND user EAP
        local_ts: ["10.97.1.0/24"]
        remote_ts: ["10.97.2.0/24"]

The first matching rule wins. ``require`` lists the authentication rounds the peer must
have completed (``pubkey``, ``eap``); without it any round suffices. Certificate matchers
(profile, san, role) never match a peer that presented no certificate. Proposed selectors
are narrowed to the intersection with the rule's selectors (RFC 7296 §2.9); an empty result is TS_UNACCEPTABLE.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509

from gateway.ikev2.codec import TrafficSelector
from gateway.ikev2.constants import TsType

_TS_RE = re.compile(r"^(?P<net>[^\[\]]+)(?:\[(?P<proto>[a-z0-9]+)?(?:/(?P<ports>\d+(?:-\d+)?))?\])?$")
_ROLE_NAMES = {"OU": "2.5.4.11", "O": "2.5.4.10", "CN": "2.5.4.3", "title": "2.5.4.12"}


class PolicyError(ValueError):
    """The policy file is invalid."""


@dataclass(frozen=True)
class Selector:
    """One allowed traffic selector: address range, IP protocol (0 = any), port range."""

    start: int
    end: int
    version: int
    proto: int = 0
    start_port: int = 0
    end_port: int = 65535

    @classmethod
    def parse(cls, text: str) -> Selector:
        m = _TS_RE.match(text.strip())
        if not m:
            raise PolicyError(f"bad traffic selector {text!r}")
        net = ipaddress.ip_network(m["net"], strict=False)
        proto = 0
        if m["proto"]:
            proto = int(m["proto"]) if m["proto"].isdigit() else socket.getprotobyname(m["proto"])
        lo, hi = 0, 65535
        if m["ports"]:
            a, _, b = m["ports"].partition("-")
            lo, hi = int(a), int(b or a)
        return cls(int(net.network_address), int(net.broadcast_address), net.version, proto, lo, hi)

    @classmethod
    def from_wire(cls, ts: TrafficSelector) -> Selector:
        version = 4 if ts.ts_type == TsType.IPV4_ADDR_RANGE else 6
        return cls(int.from_bytes(ts.start_addr, "big"), int.from_bytes(ts.end_addr, "big"), version,
                   ts.ip_proto, ts.start_port, ts.end_port)

    def to_wire(self) -> TrafficSelector:
        size = 4 if self.version == 4 else 16
        ttype = TsType.IPV4_ADDR_RANGE if self.version == 4 else TsType.IPV6_ADDR_RANGE
        return TrafficSelector(ttype, self.proto, self.start_port, self.end_port,
                               self.start.to_bytes(size, "big"), self.end.to_bytes(size, "big"))

    def intersect(self, other: Selector) -> Selector | None:
        if self.version != other.version:
            return None
        if self.proto and other.proto and self.proto != other.proto:
            return None
        start, end = max(self.start, other.start), min(self.end, other.end)
        lo, hi = max(self.start_port, other.start_port), min(self.end_port, other.end_port)
        if start > end or lo > hi:
            return None
        return Selector(start, end, self.version, self.proto or other.proto, lo, hi)

    def __str__(self) -> str:
        a, b = ipaddress.ip_address(self.start), ipaddress.ip_address(self.end)
        nets = list(ipaddress.summarize_address_range(a, b))  # type: ignore[type-var]
        text = str(nets[0]) if len(nets) == 1 else f"{a}-{b}"
        if self.proto or (self.start_port, self.end_port) != (0, 65535):
            text += f"[{self.proto}/{self.start_port}-{self.end_port}]"
        return text


def narrow(proposed: tuple[TrafficSelector, ...], allowed: tuple[Selector, ...]) -> tuple[Selector, ...]:
    """Intersect each proposed selector with each allowed one (RFC 7296 §2.9)."""
    out: list[Selector] = []
    for ts in proposed:
        mine = Selector.from_wire(ts)
        out += [s for s in (mine.intersect(a) for a in allowed) if s is not None and s not in out]
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    """One policy rule (see module docstring)."""

    name: str
    profiles: tuple[str, ...]
    san_patterns: tuple[str, ...]
    roles: tuple[str, ...]
    local_ts: tuple[Selector, ...]
    remote_ts: tuple[Selector, ...]
    radius_groups: tuple[str, ...] = ()
    require: tuple[str, ...] = ()


def _cert_oids(cert: x509.Certificate) -> set[str]:
    oids: set[str] = set()
    for cls in (x509.CertificatePolicies, x509.ExtendedKeyUsage):
        try:
            ext = cert.extensions.get_extension_for_class(cls).value
        except x509.ExtensionNotFound:
            continue
        for item in ext:  # type: ignore[attr-defined]
            oids.add(item.policy_identifier.dotted_string if isinstance(item, x509.PolicyInformation)
                     else item.dotted_string)
    return oids


def _san_strings(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for prefix, cls in (("DNS", x509.DNSName), ("email", x509.RFC822Name), ("IP", x509.IPAddress)):
        for v in sans.get_values_for_type(cls):
            out += [str(v), f"{prefix}:{v}"]
    return out


def _as_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


@dataclass(frozen=True)
class Policy:
    """Ordered rules; :meth:`match` returns the first rule the certificate satisfies."""

    rules: tuple[Rule, ...]
    role_oid: str = "2.5.4.11"

    @classmethod
    def load(cls, path: Path) -> Policy:
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict) or not isinstance(doc.get("rules", []), list):
            raise PolicyError("policy must be a mapping with a 'rules' list")
        role = str(doc.get("role_attribute", "OU"))
        rules = tuple(cls._rule(i, r) for i, r in enumerate(doc.get("rules") or []))
        return cls(rules, _ROLE_NAMES.get(role, role))

    @staticmethod
    def _rule(i: int, r: object) -> Rule:
        if not isinstance(r, dict):
            raise PolicyError(f"rule {i} is not a mapping")
        m = r.get("match") or {}
        require = _as_tuple(r.get("require"))
        if set(require) - {"pubkey", "eap"}:
            raise PolicyError(f"rule {i}: require takes pubkey and/or eap")
        return Rule(str(r.get("name", f"rule-{i}")), _as_tuple(m.get("profile")), _as_tuple(m.get("san")),
                    _as_tuple(m.get("role")), tuple(Selector.parse(t) for t in _as_tuple(r.get("local_ts"))),
                    tuple(Selector.parse(t) for t in _as_tuple(r.get("remote_ts"))),
                    _as_tuple(m.get("radius_group")), require)

    def _roles(self, cert: x509.Certificate) -> set[str]:
        attrs = cert.subject.get_attributes_for_oid(x509.ObjectIdentifier(self.role_oid))
        return {str(a.value) for a in attrs}

    def match(self, cert: x509.Certificate) -> Rule | None:
        return self.match_peer(cert, frozenset(), frozenset({"pubkey"}))

    def match_peer(self, cert: x509.Certificate | None, groups: frozenset[str], methods: frozenset[str]
                   ) -> Rule | None:
        """First rule whose certificate matchers, RADIUS groups and required rounds all hold."""
        oids = _cert_oids(cert) if cert is not None else set()
        sans = _san_strings(cert) if cert is not None else []
        roles = self._roles(cert) if cert is not None else set()
        for rule in self.rules:
            if rule.require and not set(rule.require) <= methods:
                continue
            if rule.radius_groups and not any(fnmatch.fnmatchcase(g, p) for g in groups for p in rule.radius_groups):
                continue
            if rule.profiles and not oids & set(rule.profiles):
                continue
            if rule.san_patterns and not any(fnmatch.fnmatchcase(s.lower(), p.lower())
                                             for s in sans for p in rule.san_patterns):
                continue
            if rule.roles and not roles & set(rule.roles):
                continue
            return rule
        return None
