"""The narrow typed interfaces through which protocol packages use the core.

Plug-in entry points (``ikepki.http``, ``ikepki.workers``, ACME validators) receive the open
deployment; they type it as one of these Protocols, never as :class:`ca.deployment.Deployment`
or ``Any``, so what a package may use of the core is written down and checked by mypy.
:class:`ca.deployment.Deployment` implements all of them.

- :class:`CoreServices` — enrollment (ACME, EST, SCEP, attestation): settings, clock, store,
  audit, the Authority (the only path that signs certificates), issuers and the root.
- :class:`ServiceKeys` — additionally the deployment's own keys (OCSP and CRL signers, the
  push signer, the SCEP RA, the HTTPS server's key) from the manifest: OCSP/CRL and the push
  worker, the automated response package.
- :class:`ConsoleServices` — the admin console: service keys (it hands the deployment on to the
  incident panels of ``ikepki.console_incidents``) plus the configured profiles it lists.
- :class:`OidcSignIn` — a person's browser sign-in at a configured OpenID Provider (the console
  uses it; ``enrollment.oidc`` implements it with the verifier its enrollment uses and registers a
  factory under the entry point group ``ikepki.oidc_signin``; :func:`oidc_sign_in` loads it).

``tests/arch/test_typed_seams.py`` fails when a ``dep``/``deployment`` parameter is typed ``Any``
(or not at all) again.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509

from ca.audit import AuditLog
from ca.authority import Authority
from ca.clock import Clock
from ca.config import CaSettings, S
from ca.issuer import Issuer
from ca.keys.signer import SigningKey
from ca.model import UserIdentity
from ca.profiles import Profile
from ca.store.db import Database
from ca.store.sql import SqlCertificateStore


class CoreServices(Protocol):
    """What an enrollment protocol uses of an open deployment."""

    @property
    def dir(self) -> Path: ...  # the deployment directory (relative settings paths resolve against it)

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> CaSettings: ...

    def settings_for(self, cls: type[S], section: str) -> S: ...

    def path(self, value: str | Path) -> Path: ...

    @property
    def db(self) -> Database: ...

    @property
    def store(self) -> SqlCertificateStore: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def authority(self) -> Authority: ...

    @property
    def issuers(self) -> dict[str, Issuer]: ...

    @property
    def root(self) -> x509.Certificate: ...


class ServiceKey(Protocol):
    """A key of the deployment's own (``service_keys`` in the manifest) and its current certificate."""

    @property
    def name(self) -> str: ...

    @property
    def key(self) -> SigningKey: ...

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def issuer_id(self) -> str: ...


class ServiceKeys(CoreServices, Protocol):
    """Core services plus the deployment's own signing keys (OCSP/CRL, push signer, SCEP RA)."""

    @property
    def manifest(self) -> dict[str, Any]: ...

    def service_key(self, name: str) -> ServiceKey: ...

    def service_key_names(self) -> list[str]: ...

    def signing_key(self, ref: str, rsa_pss: bool = False) -> SigningKey: ...

    @property
    def tls_files(self) -> tuple[Path, Path]: ...


class ConsoleServices(ServiceKeys, Protocol):
    """What the admin console uses: service keys (handed on to the incident panels) and the
    profiles as configured (lifetimes and subject policies applied)."""

    @property
    def profiles(self) -> dict[str, Profile]: ...


# -- browser sign-in at an identity provider ---------------------------------------------------

OIDC_SIGNIN_GROUP = "ikepki.oidc_signin"


@dataclass(frozen=True)
class OidcClient:
    """A relying party's registration at a provider (OAuth 2.0, RFC 6749 §2): a confidential client
    authenticates at the token endpoint with its secret (``client_secret_basic``, §2.3.1); a public
    one (secret None) relies on PKCE alone."""

    provider: str  # the provider's name in the ``oidc:`` section
    client_id: str
    client_secret: str | None
    redirect_uri: str

    def __repr__(self) -> str:  # never the secret
        return f"OidcClient({self.provider!r}, {self.client_id!r}, {self.redirect_uri!r})"


class OidcSignIn(Protocol):
    """The authorization code flow of OpenID Connect Core 1.0 §3.1 with PKCE (RFC 7636, S256).

    The caller keeps ``state``, ``nonce`` and the code verifier bound to the browser that started
    the sign-in; the implementation builds the authorization request and redeems the code. The ID
    token is verified exactly as for certificate enrollment (signature from the provider's JWKS,
    ``iss``, ``aud`` = this client, times, ``nonce``); blocking (HTTP): call from a worker thread."""

    def providers(self) -> list[str]:
        """Enabled providers by name."""
        ...

    def authorization_url(self, client: OidcClient, state: str, nonce: str, code_challenge: str) -> str:
        """Where to send the browser (Core §3.1.2.1); PKCE ``code_challenge_method=S256``."""
        ...

    def redeem(self, client: OidcClient, code: str, code_verifier: str, nonce: str) -> UserIdentity:
        """The person behind an authorization code (Core §3.1.3): token request, ID token
        verification (§3.1.3.7, ``nonce`` equal to the one sent). ``email`` is set only when the
        provider says it is verified. PKIError (UNAUTHORIZED / UNAVAILABLE) otherwise."""
        ...


def oidc_sign_in(deployment: CoreServices) -> OidcSignIn | None:
    """The implementation registered under ``ikepki.oidc_signin`` (first by name), None when no
    installed package provides one."""
    for ep in sorted(entry_points(group=OIDC_SIGNIN_GROUP), key=lambda e: e.name):
        try:
            factory = ep.load()
        except ModuleNotFoundError:
            continue
        signin: OidcSignIn = factory(deployment)
        return signin
    return None


SIGNED_OUT_GROUP = "ikepki.signed_out"


def person_signed_out(deployment: CoreServices, person: UserIdentity) -> int:
    """A person signed out at the identity provider (OpenID Connect Back-Channel Logout 1.0 §2.6,
    reported by ``enrollment.oidc``): every listener registered under ``ikepki.signed_out``
    (e.g. the console, which ends their sessions) is told; the number of sessions they ended.
    A listener that fails is logged and does not stop the others (the certificates are held first)."""
    import logging

    ended = 0
    for ep in sorted(entry_points(group=SIGNED_OUT_GROUP), key=lambda e: e.name):
        try:
            ended += int(ep.load()(deployment, person))
        except ModuleNotFoundError:
            continue
        except Exception as exc:
            logging.getLogger("ikepki.ports").error("sign-out listener %s failed: %s", ep.name, exc)
    return ended


if TYPE_CHECKING:
    from ca.deployment import Deployment

    def _deployment_implements_every_port(dep: Deployment) -> ConsoleServices:
        """mypy checks here that the Deployment still provides all of the Protocols above."""
        return dep
