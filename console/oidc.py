"""Pure rules of the console's sign-in through an identity provider (the HTTP exchange is the
:class:`ca.ports.OidcSignIn` port's; the routes are in :mod:`console.app`)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping

from ca.model import UserIdentity
from ca.service.admin import ROLES

MAX_NAME = 255  # console_sessions.name, the audit's actor


def code_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 ``S256``: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def console_role(group_roles: Mapping[str, str], groups: Iterable[str]) -> str | None:
    """The highest console role any of the person's groups maps to; None: no console access."""
    roles = [group_roles[g] for g in groups if g in group_roles]
    return max(roles, key=lambda r: ROLES[r]) if roles else None


def person_name(user: UserIdentity) -> str | None:
    """The person as the audit names them: ``oidc:<iss>#<sub>`` (the URI enrollment records for a
    user's certificates, :attr:`ca.model.UserIdentity.uri`); None when longer than an actor may be."""
    name = user.principal
    return name if len(name) <= MAX_NAME else None
