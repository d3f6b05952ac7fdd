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

``tests/arch/test_typed_seams.py`` fails when a ``dep``/``deployment`` parameter is typed ``Any``
(or not at all) again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509

from ca.audit import AuditLog
from ca.authority import Authority
from ca.clock import Clock
from ca.config import CaSettings, S
from ca.issuer import Issuer
from ca.keys.signer import SigningKey
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


if TYPE_CHECKING:
    from ca.deployment import Deployment

    def _deployment_implements_every_port(dep: Deployment) -> ConsoleServices:
        """mypy checks here that the Deployment still provides all of the Protocols above."""
        return dep
