"""Mount of the ACME server on the HTTPS listener at /acme (directory: /acme/directory)."""

from __future__ import annotations

import importlib
import logging

from ca.ports import CoreServices
from ca.service.mounts import HTTPS, HttpMount
from enrollment.acme.app import AcmeApp
from enrollment.acme.challenges import ChallengeRegistry, default_registry
from enrollment.acme.service import AcmeService
from enrollment.acme.settings import AcmeSettings

PREFIX = "/acme"
EXTRA_VALIDATORS = "enrollment.attestation.acme_validator"  # provides acme_validators(deployment) -> list
log = logging.getLogger("ikepki.acme")


def build_registry(deployment: CoreServices, settings: AcmeSettings) -> ChallengeRegistry:
    registry = default_registry(settings)
    try:
        module = importlib.import_module(EXTRA_VALIDATORS)
    except ModuleNotFoundError as exc:
        if exc.name is None or not EXTRA_VALIDATORS.startswith(exc.name):
            raise
        return registry
    for validator in module.acme_validators(deployment):
        registry.register(validator)
    return registry


def build_service(deployment: CoreServices) -> AcmeService:
    settings = deployment.settings_for(AcmeSettings, "acme")
    settings.host_map()  # fail closed on a malformed mapping
    return AcmeService(deployment, settings, build_registry(deployment, settings))


def http_mounts(deployment: CoreServices) -> list[HttpMount]:
    return [HttpMount(PREFIX, AcmeApp(build_service(deployment)), frozenset({HTTPS}), "acme", strip_prefix=True)]
