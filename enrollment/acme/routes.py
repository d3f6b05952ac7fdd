"""Mount of the ACME server on the HTTPS listener at /acme (directory: /acme/directory)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from ca.ports import ServiceKeys
from ca.service.mounts import HTTPS, HttpMount
from enrollment.acme.app import AcmeApp
from enrollment.acme.challenges import ChallengeRegistry, default_registry
from enrollment.acme.service import AcmeService
from enrollment.acme.settings import AcmeSettings

PREFIX = "/acme"
VALIDATORS_GROUP = "ikepki.acme_validators"  # entry points: callable(deployment) -> list[ChallengeValidator]
log = logging.getLogger("ikepki.acme")


def build_registry(deployment: ServiceKeys, settings: AcmeSettings) -> ChallengeRegistry:
    """The built-in validators plus every plug-in of entry-point group ``ikepki.acme_validators`` (e.g.
    ``device-attest-01`` from ``enrollment.attestation``), so ACME never imports a plug-in by name."""
    registry = default_registry(settings)
    for entry in sorted(entry_points(group=VALIDATORS_GROUP), key=lambda e: e.name):
        for validator in entry.load()(deployment):
            registry.register(validator)
    return registry


def build_service(deployment: ServiceKeys) -> AcmeService:
    settings = deployment.settings_for(AcmeSettings, "acme")
    settings.host_map()  # fail closed on a malformed mapping
    return AcmeService(deployment, settings, build_registry(deployment, settings))


def http_mounts(deployment: ServiceKeys) -> list[HttpMount]:
    return [HttpMount(PREFIX, AcmeApp(build_service(deployment)), frozenset({HTTPS}), "acme", strip_prefix=True)]
