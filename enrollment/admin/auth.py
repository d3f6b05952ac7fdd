"""Who is calling: a bearer token (``Authorization: Bearer …``, RFC 6750 §2.1) checked against
the store's hashed admin tokens, or a TLS client certificate whose subject is mapped to a role
in ``admin.cert_roles``. Roles are ordered viewer < revoker < admin."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ca.model import CertStatus

ROLES = {"viewer": 0, "revoker": 1, "admin": 2}
MAX_TOKEN = 512


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    method: str  # token | certificate
    source: str

    def can(self, role: str) -> bool:
        return ROLES.get(self.role, -1) >= ROLES[role]


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > MAX_TOKEN:
        return None
    return value


def authenticate(deployment: Any, cert_roles: dict[str, str], authorization: str | None,
                 scope: Mapping[str, Any], source: str) -> Principal | None:
    """A presented token decides alone (a wrong token is not rescued by a certificate)."""
    if authorization:
        token = bearer_token(authorization)
        found = deployment.store.verify_admin_token(token) if token else None
        return Principal(found[0], found[1], "token", source) if found and found[1] in ROLES else None
    return _certificate_principal(deployment, cert_roles, scope, source)


def _certificate_principal(deployment: Any, cert_roles: dict[str, str], scope: Mapping[str, Any], source: str
                           ) -> Principal | None:
    der = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_der")
    if not der or not cert_roles:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    now = deployment.clock.now()
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        return None  # the TLS layer does not check validity periods
    role = cert_roles.get(cert.subject.rfc4514_string())
    if role not in ROLES:
        return None
    info = deployment.store.get(cert.serial_number)
    if info is not None and info.der == der and info.status is not CertStatus.valid:
        return None  # revoked or held admin certificate
    return Principal(cert.subject.rfc4514_string(), role, "certificate", source)
