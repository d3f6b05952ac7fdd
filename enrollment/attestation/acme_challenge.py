"""acme-library classes for the ``device-attest-01`` challenge (draft-ietf-acme-device-attest-09 §5).

The ``acme`` package (5.x) knows only dns-01 / http-01; importing this module registers the
challenge and its response so ``Challenge.from_json`` / ``ChallengeResponse.from_json`` recognise them.
The response payload is ``{"attObj": "<base64url CBOR attestation object>"}``.
"""

from __future__ import annotations

from typing import Any

import josepy as jose
from acme import challenges


@challenges.ChallengeResponse.register
class DeviceAttest01Response(challenges.ChallengeResponse):
    """Response carrying the WebAuthn attestation object (josepy 2 needs the field annotation)."""

    typ = "device-attest-01"
    att_obj: str = jose.field("attObj")

    @classmethod
    def from_att_obj(cls, att_obj: bytes) -> DeviceAttest01Response:
        """Encode raw attObj bytes as unpadded base64url (RFC 8555 §6.1)."""
        return cls(att_obj=jose.b64encode(att_obj).decode("ascii"))

    def att_obj_bytes(self) -> bytes:
        """The decoded attestation object."""
        return jose.b64decode(self.att_obj)


@challenges.Challenge.register
class DeviceAttest01(challenges.KeyAuthorizationChallenge):
    """The challenge: ``token`` only; the key authorization is the attestation's attToBeSigned."""

    typ = "device-attest-01"
    response_cls = DeviceAttest01Response  # type: ignore[assignment]

    def validation(self, account_key: jose.JWK, **unused_kwargs: Any) -> str:
        """The key authorization the TPM must certify over (extraData = H(key authorization))."""
        return self.key_authorization(account_key)

    def response(self, account_key: jose.JWK) -> challenges.KeyAuthorizationChallengeResponse:
        """Not derivable from the account key alone: build :class:`DeviceAttest01Response` from an attObj."""
        raise TypeError("use DeviceAttest01Response.from_att_obj(attObj) for device-attest-01")
