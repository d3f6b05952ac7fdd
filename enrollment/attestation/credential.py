"""AK enrollment by credential activation (TPM 2.0 Library Part 1 §24 "Credential Protection",
Part 3 §12.5 TPM2_MakeCredential / §12.6 TPM2_ActivateCredential; TCG EK Credential Profile §2).

The server never talks to the TPM.  ``start`` validates the EK certificate and the AK public area,
draws a 32-byte secret and encrypts it in software to the certified EK for the AK *name*
(MakeCredential).  Only a TPM holding that EK *and* a loaded object with that name can recover it
(ActivateCredential), which proves the AK lives in the same TPM as the EK.  ``finish`` compares the
returned secret in constant time.  Challenges are state objects with an id, an expiry and single
use; they are persisted through an injected :class:`ChallengeRepository`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from tpm2_pytss.utils import make_credential

from enrollment.attestation.clock import Clock, require_aware
from enrollment.attestation.ek import EkIdentity, EkTrustStore, ek_public_area, validate_ek_certificate
from enrollment.attestation.errors import AttestationError, Reason
from enrollment.attestation.repository import ChallengeRepository
from enrollment.attestation.tpm_structures import (
    check_ak_public,
    object_name,
    parse_public_area,
    public_key_of,
)

SECRET_SIZE = 32
DEFAULT_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class CredentialChallenge:
    """Server-side state of one activation (stores only a hash of the secret)."""

    id: str
    ek_certificate_der: bytes
    ak_public: bytes  # marshalled TPMT_PUBLIC
    ak_name: bytes
    secret_sha256: bytes
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class CredentialBlob:
    """What the device receives: marshalled TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET."""

    challenge_id: str
    id_object: bytes
    encrypted_secret: bytes
    expires_at: datetime

    def to_json(self) -> dict[str, str]:
        """Wire form: base64url (no padding) binaries, RFC 3339 expiry."""
        return {
            "challengeId": self.challenge_id,
            "idObject": _b64e(self.id_object),
            "encryptedSecret": _b64e(self.encrypted_secret),
            "expires": self.expires_at.isoformat().replace("+00:00", "Z"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CredentialBlob:
        """Parse the wire form (raises AttestationError ``malformed``)."""
        try:
            return cls(
                str(data["challengeId"]),
                _b64d(data["idObject"]),
                _b64d(data["encryptedSecret"]),
                require_aware(datetime.fromisoformat(str(data["expires"]))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AttestationError(Reason.MALFORMED, f"credential blob: {exc}") from exc


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: object) -> bytes:
    if not isinstance(text, str) or len(text) > 4096:
        raise ValueError("expected a bounded base64url string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ActivatedAk:
    """An AK proven to reside in the TPM of ``ek``; input for the AK certificate."""

    ek: EkIdentity
    ak_public: bytes  # marshalled TPMT_PUBLIC
    ak_name: bytes
    ak_public_key: PublicKeyTypes


def make_credential_blob(ek_public_key: PublicKeyTypes, ak_name: bytes, secret: bytes) -> tuple[bytes, bytes]:
    """Software TPM2_MakeCredential to the EK (RSA L-1 / ECC H-3 ... templates), marshalled."""
    id_object, encrypted_secret = make_credential(ek_public_area(ek_public_key), secret, ak_name)
    return id_object.marshal(), encrypted_secret.marshal()


class CredentialActivation:
    """Issues and redeems credential-activation challenges."""

    def __init__(
        self,
        trust: EkTrustStore,
        repository: ChallengeRepository[CredentialChallenge],
        clock: Clock,
        ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        self._trust = trust
        self._repository = repository
        self._clock = clock
        self._ttl = ttl

    def _now(self) -> datetime:
        return require_aware(self._clock.now())

    def start(self, ek_certificate_der: bytes, ak_public: bytes) -> CredentialBlob:
        """Validate EK + AK and produce the encrypted credential (raises AttestationError)."""
        now = self._now()
        ek = validate_ek_certificate(ek_certificate_der, self._trust, now)
        area = parse_public_area(ak_public)
        check_ak_public(area)
        name = object_name(area)
        secret = secrets.token_bytes(SECRET_SIZE)
        id_object, encrypted_secret = make_credential_blob(ek.public_key, name, secret)
        challenge = CredentialChallenge(
            id=secrets.token_urlsafe(24),
            ek_certificate_der=ek_certificate_der,
            ak_public=ak_public,
            ak_name=name,
            secret_sha256=hashlib.sha256(secret).digest(),
            created_at=now,
            expires_at=now + self._ttl,
        )
        self._repository.add(challenge)
        return CredentialBlob(challenge.id, id_object, encrypted_secret, challenge.expires_at)

    def finish(self, challenge_id: str, secret: bytes) -> ActivatedAk:
        """Redeem a challenge once; the secret is compared in constant time (hash of both sides)."""
        now = self._now()
        challenge = self._repository.get(challenge_id)
        if challenge is None:
            raise AttestationError(Reason.UNKNOWN_CHALLENGE, "no such credential challenge")
        if not self._repository.consume(challenge_id, now):
            raise AttestationError(Reason.REPLAY, "credential challenge already used")
        if now > challenge.expires_at:
            raise AttestationError(Reason.EXPIRED, "credential challenge expired")
        if not isinstance(secret, bytes) or len(secret) > 64:
            raise AttestationError(Reason.MALFORMED, "secret must be at most 64 bytes")
        if not hmac.compare_digest(hashlib.sha256(secret).digest(), challenge.secret_sha256):
            raise AttestationError(Reason.WRONG_SECRET, "activated secret does not match")
        ek = validate_ek_certificate(challenge.ek_certificate_der, self._trust, now)
        area = parse_public_area(challenge.ak_public)
        return ActivatedAk(ek, challenge.ak_public, challenge.ak_name, public_key_of(area))
