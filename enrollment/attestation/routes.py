"""HTTPS edge of AK enrollment by credential activation (mounted at ``/attest``).

TPM 2.0 Library Part 1 §24 (credential protection), Part 3 §12.5/§12.6 (MakeCredential /
ActivateCredential); TCG EK Credential Profile §2-3; RFC 7807 problem documents.

``POST /attest/v1/ak/start`` (``application/json``, body ≤ 32 KiB)::

    {"ekCertificate": b64url(EK cert DER), "akPublic": b64url(AK TPMT_PUBLIC),
     "eab": {"kid": "<ACME EAB key id>", "mac": b64url(HMAC-SHA256(eab_hmac_key, MAC_INPUT))}}

    MAC_INPUT = "ikepki-attest-v1\\n" + ekCertificate + "\\n" + akPublic   (the two b64url strings as sent)

→ 201 ``{"challengeId", "idObject", "encryptedSecret", "expires"}`` (see ``CredentialBlob.to_json``).

Authorisation (``attestation.require_eab``, default true): the ACME External Account Binding key that
the device also uses for its ACME account (RFC 8555 §7.3.4; ``ikepki acme eab create``).  The key must
be enabled and unexpired, bound to profile ``machine``, and its identifier patterns must allow the
device's permanent identifier (``device:*`` or the exact ``<hex>/<assigner>`` value).  A single-use
key still authorises AK enrollment after it bound its account (AK certificates are short-lived and
re-enrolled).  The MAC binds the EK and AK, so a captured request yields nothing but a credential blob
that only the same TPM can open.

``POST /attest/v1/ak/finish`` ``{"challengeId", "secret": b64url(activated secret)}``
→ 201 ``{"akCertificate": b64url(DER), "chain": [b64url(attestation CA DER)], "permanentIdentifier",
"hardwareModule", "ekFingerprint", "expires"}``.

Every challenge is single use (conditional UPDATE in :mod:`enrollment.attestation.store`) and expires
after ``attestation.credential_ttl_seconds``.  The AK certificate is issued through the Authority (profile
``attestation-ak``: signed by the attestation CA in the HSM, linted, recorded in the core store with the
EK fingerprint — auditable, revocable, answered by OCSP).  Errors: 400 ``badAttestationStatement``
(with ``reason``), 400 ``malformed``, 401/403 ``unauthorized`` (missing/bad EAB, blocked device), 413, 415, 503.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ca.errors import ErrorKind, PKIError
from ca.model import Requester
from ca.ports import CoreServices
from ca.service.caller import client_ip
from ca.service.mounts import HTTPS, HttpMount
from enrollment.acme.messages import matches_pattern
from enrollment.acme.model import EabKey, Identifier
from enrollment.acme.store import AcmeStore
from enrollment.attestation.ak_cert import issue_ak_certificate
from enrollment.attestation.chain import ChainError
from enrollment.attestation.credential import ActivatedAk, CredentialActivation
from enrollment.attestation.device_api import Problem, problem_from_pki, read_json_object
from enrollment.attestation.ek import EkIdentity, EkTrustStore, validate_ek_certificate
from enrollment.attestation.errors import AttestationError
from enrollment.attestation.settings import AttestationSettings
from enrollment.attestation.store import SqlCredentialChallengeRepository
from enrollment.attestation.wire import b64e, start_mac, start_mac_input

PREFIX = "/attest"
log = logging.getLogger("ikepki.attestation")


def _from_attestation(exc: AttestationError) -> Problem:
    return Problem("badAttestationStatement", f"{exc.reason.value}: {exc.detail}", reason=exc.reason.value)


# -- wire models -------------------------------------------------------------------------------------


def b64d(value: Any, what: str, bound: int = 8192) -> bytes:
    if not isinstance(value, str) or not 0 < len(value) <= bound * 4 // 3 + 4:
        raise Problem("malformed", f"{what} must be a non-empty base64url string of at most {bound} bytes")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise Problem("malformed", f"{what} is not base64url") from None


@dataclass(frozen=True)
class AkStartRequest:
    ek_certificate_b64: str
    ak_public_b64: str
    eab_kid: str | None
    eab_mac: bytes | None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> AkStartRequest:
        ek, ak = body.get("ekCertificate"), body.get("akPublic")
        b64d(ek, "ekCertificate")
        b64d(ak, "akPublic", 1024)
        eab = body.get("eab")
        if eab is None:
            return cls(str(ek), str(ak), None, None)
        if not isinstance(eab, dict) or not isinstance(eab.get("kid"), str) or not 0 < len(eab["kid"]) <= 64:
            raise Problem("malformed", "eab must be {kid, mac}")
        return cls(str(ek), str(ak), eab["kid"], b64d(eab.get("mac"), "eab.mac", 64))

    @property
    def ek_der(self) -> bytes:
        return b64d(self.ek_certificate_b64, "ekCertificate")

    @property
    def ak_public(self) -> bytes:
        return b64d(self.ak_public_b64, "akPublic", 1024)


@dataclass(frozen=True)
class AkFinishRequest:
    challenge_id: str
    secret: bytes

    @classmethod
    def parse(cls, body: dict[str, Any]) -> AkFinishRequest:
        cid = body.get("challengeId")
        if not isinstance(cid, str) or not 0 < len(cid) <= 64:
            raise Problem("malformed", "challengeId must be a short string")
        return cls(cid, b64d(body.get("secret"), "secret", 64))


# -- service -----------------------------------------------------------------------------------------


class AkEnrollmentService:
    """Start/finish of credential activation and AK certificate issuance (blocking: DB + HSM)."""

    def __init__(self, deployment: CoreServices, settings: AttestationSettings) -> None:
        self.dep = deployment
        self.settings = settings
        self.repository = SqlCredentialChallengeRepository(deployment.db)
        self.trust = EkTrustStore.from_directory(deployment.path(settings.ek_roots)) if settings.ek_roots else None

    def _activation(self, principal: str = "") -> CredentialActivation:
        if self.trust is None:
            raise PKIError(ErrorKind.UNAVAILABLE, "attestation.ek_roots is not configured on this server")
        return CredentialActivation(self.trust, self.repository.with_principal(principal), self.dep.clock,
                                    timedelta(seconds=self.settings.credential_ttl_seconds))

    def start(self, request: AkStartRequest, source: str) -> dict[str, str]:
        if self.trust is None:
            raise PKIError(ErrorKind.UNAVAILABLE, "attestation.ek_roots is not configured on this server")
        now = self.dep.clock.now()
        key = self._authenticate(request, now)
        ek = validate_ek_certificate(request.ek_der, self.trust, now)
        self._check_policy(key, ek.permanent_identifier.acme_value())
        principal = key.kid if key is not None else ""
        self._check_blocked(ek)
        blob = self._activation(principal).start(request.ek_der, request.ak_public)
        self.dep.audit.append(now, principal or "anonymous", "attest-ak-start", "attestation", source=source,
                              device=ek.permanent_identifier.acme_value(), challenge=blob.challenge_id)
        return blob.to_json()

    def _check_blocked(self, ek: EkIdentity) -> None:
        """Blocked by permanent identifier, by EK fingerprint, or as ``ek:<fingerprint>`` (admin API form)."""
        store = self.dep.store
        if store.is_device_blocked(ek.permanent_identifier.acme_value(), ek.fingerprint) or \
                store.is_device_blocked(f"ek:{ek.fingerprint}", None):
            raise PKIError(ErrorKind.BLOCKED, "this device is blocked from enrollment")

    def _authenticate(self, request: AkStartRequest, now: datetime) -> EabKey | None:
        """EAB key id + HMAC (module docstring), checked before anything else is parsed."""
        if request.eab_kid is None or request.eab_mac is None:
            if self.settings.require_eab:
                raise PKIError(ErrorKind.UNAUTHORIZED, "this server requires eab {kid, mac} on ak/start")
            return None
        key = AcmeStore(self.dep.db).eab_key(request.eab_kid)
        expected = hmac.new(key.hmac_key if key else b"\0" * 32,
                            start_mac_input(request.ek_certificate_b64, request.ak_public_b64), hashlib.sha256)
        if key is None or not hmac.compare_digest(expected.digest(), request.eab_mac):
            raise PKIError(ErrorKind.UNAUTHORIZED, "unknown EAB key id or wrong MAC")
        if key.disabled or (key.expires is not None and key.expires <= now):
            raise PKIError(ErrorKind.UNAUTHORIZED, "the EAB key is disabled or expired")
        return key

    @staticmethod
    def _check_policy(key: EabKey | None, device_id: str) -> None:
        """The EAB key's profile is ``machine`` and a pattern (``device:*`` or exact) allows the device."""
        if key is None:
            return
        if key.profile != "machine":
            raise PKIError(ErrorKind.UNAUTHORIZED, f"the EAB key is for profile {key.profile!r}; a TPM device needs "
                                                   "a key for profile 'machine'")
        ident = Identifier("permanent-identifier", device_id)
        if not any(matches_pattern(ident, p) for p in key.identifiers):
            allowed = ",".join(key.identifiers)[:200]
            raise PKIError(ErrorKind.UNAUTHORIZED, f"the EAB key's identifiers ({allowed}) do not allow this device: "
                                                   "a TPM device needs 'device:*', '*' or its exact identifier "
                                                   f"{device_id[:120]!r} (ikepki acme eab create --identifiers)")

    def finish(self, request: AkFinishRequest, source: str) -> dict[str, Any]:
        principal = self.repository.principal_of(request.challenge_id) or "anonymous"
        activated = self._activation().finish(request.challenge_id, request.secret)
        device_id = activated.ek.permanent_identifier.acme_value()
        self._check_blocked(activated.ek)
        cert, issuer_cert = self._issue(activated, principal, source)
        return {"akCertificate": b64e(cert.public_bytes(Encoding.DER)),
                "chain": [b64e(issuer_cert.public_bytes(Encoding.DER))],
                "permanentIdentifier": device_id, "hardwareModule": activated.ek.hardware_module.acme_value(),
                "ekFingerprint": activated.ek.fingerprint,
                "expires": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")}

    def _issue(self, activated: ActivatedAk, principal: str, source: str) -> tuple[x509.Certificate,
                                                                                  x509.Certificate]:
        issued = issue_ak_certificate(self.dep.authority, activated, Requester("attestation", principal, source),
                                      timedelta(days=self.settings.ak_validity_days))
        return issued.certificate, issued.chain[0]


# -- HTTP ----------------------------------------------------------------------------------------------


def _run(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except AttestationError as exc:
        raise _from_attestation(exc) from None
    except PKIError as exc:
        raise problem_from_pki(exc) from None
    except ChainError as exc:
        raise Problem("badAttestationStatement", str(exc)) from None


def build_app(service: AkEnrollmentService) -> Starlette:
    """Starlette app with the two endpoints (paths relative to the /attest prefix)."""

    async def start(request: Request) -> Response:
        try:
            parsed = AkStartRequest.parse(await read_json_object(request))
            result = await anyio.to_thread.run_sync(_run, service.start, parsed, client_ip(request.scope))
        except Problem as problem:
            return problem.response()
        return JSONResponse(result, 201)

    async def finish(request: Request) -> Response:
        try:
            parsed = AkFinishRequest.parse(await read_json_object(request))
            result = await anyio.to_thread.run_sync(_run, service.finish, parsed, client_ip(request.scope))
        except Problem as problem:
            return problem.response()
        return JSONResponse(result, 201)

    return Starlette(routes=[Route("/v1/ak/start", start, methods=["POST"]),
                             Route("/v1/ak/finish", finish, methods=["POST"])])


def http_mounts(deployment: CoreServices) -> list[HttpMount]:
    """Entry point (group ikepki.http): AK enrollment on the HTTPS listener."""
    settings = deployment.settings_for(AttestationSettings, "attestation")
    service = AkEnrollmentService(deployment, settings)
    return [HttpMount(PREFIX, build_app(service), frozenset({HTTPS}), "attestation", strip_prefix=True)]


__all__ = ["AkEnrollmentService", "b64d", "b64e", "http_mounts", "start_mac", "start_mac_input"]
