"""Signed revocation events pushed from ikepki to relying parties (VPN gateways).

Wire format: a JWS in compact serialization (RFC 7515 §7.1), media type
``application/jose``, POSTed to a gateway's push endpoint. The protected header is
``{"alg": "ES256"|"ES384"|"PS256", "typ": "ikepki-revocation+jws", "x5c": [signer, ...]}``
where ``x5c`` (RFC 7515 §4.1.6) carries the push-signer certificate first and any
intermediates after it. A receiver trusts an event when ``x5c`` chains to one of its
configured ikepki roots and the signer certificate carries the EKU
:data:`PUSH_SIGNER_EKU`. The payload is the JSON object of :class:`RevocationEvent`.

This module is pure (no keys, no store) so that ``gateway`` may import it.
Delivery is idempotent on (issuer key id, serial): a receiver ignores an event whose
``event_id`` it has applied and treats repeats of the same (issuer, serial) as no-ops.
A ``test`` event (serial ``0``, no identities) is verified like any other and only acknowledged:
``ikepki gateways add`` / ``gateways test`` use it to prove a receiver trusts ikepki's signer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca.oids import PUSH_SIGNER_EKU

__all__ = ["PUSH_SIGNER_EKU", "RevocationEvent", "sign_event", "verify_event"]
JWS_TYPE = "ikepki-revocation+jws"
MEDIA_TYPE = "application/jose"
MAX_EVENT_BYTES = 64 * 1024

EVENT_REVOKED = "revoked"
EVENT_UNREVOKED = "unrevoked"  # certificateHold released (RFC 5280 §5.3.1 removeFromCRL)
EVENT_TEST = "test"  # ``ikepki gateways add/test``: verify and acknowledge, change nothing
EVENT_TYPES = (EVENT_REVOKED, EVENT_UNREVOKED, EVENT_TEST)


class EventVerificationError(ValueError):
    """The event is malformed, untrusted or badly signed."""


@dataclass(frozen=True)
class RevocationEvent:
    """One revocation (or hold release) of one certificate."""

    event_id: str
    type: str
    issuer: str  # RFC 4514 string of the issuing CA's subject
    issuer_key_id: str  # hex SubjectKeyIdentifier of the issuing CA (= AKI of the leaf)
    serial: str  # hex, lower case, no leading zeros
    reason: str | None  # RFC 5280 CRLReason name, e.g. "keyCompromise"
    revoked_at: str | None  # RFC 3339, UTC
    identities: list[str] = field(default_factory=list)  # e.g. "DNS:gw.example.test", "email:a@b"
    device_id: str | None = None
    created_at: str = ""
    v: int = 1

    @property
    def serial_int(self) -> int:
        return int(self.serial, 16)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RevocationEvent:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise EventVerificationError("payload is not JSON") from exc
        if not isinstance(obj, dict) or obj.get("v") != 1:
            raise EventVerificationError("unsupported event version")
        try:
            ev = cls(
                event_id=str(obj["event_id"]),
                type=str(obj["type"]),
                issuer=str(obj["issuer"]),
                issuer_key_id=str(obj["issuer_key_id"]),
                serial=str(obj["serial"]),
                reason=obj.get("reason"),
                revoked_at=obj.get("revoked_at"),
                identities=[str(i) for i in obj.get("identities") or []],
                device_id=obj.get("device_id"),
                created_at=str(obj.get("created_at", "")),
            )
            int(ev.serial, 16)
        except (KeyError, TypeError, ValueError) as exc:
            raise EventVerificationError(f"bad event field: {exc}") from exc
        if ev.type not in EVENT_TYPES:
            raise EventVerificationError(f"unknown event type {ev.type!r}")
        return ev


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def now_rfc3339(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _alg_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES384" if key.curve.key_size >= 384 else "ES256"
    return "PS256"


def sign_event(
    event: RevocationEvent,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    chain: Sequence[x509.Certificate],
) -> str:
    """Return the compact JWS of ``event`` signed by ``key`` (any cryptography key,
    including the HSM adapter), with ``chain`` (signer first) in ``x5c``."""
    from cryptography.hazmat.primitives.serialization import Encoding

    alg = _alg_for(key)
    header = {"alg": alg, "typ": JWS_TYPE, "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                                                   for c in chain]}
    signing_input = f"{b64u(json.dumps(header, separators=(',', ':')).encode())}.{b64u(event.to_json())}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        h: hashes.HashAlgorithm = hashes.SHA384() if alg == "ES384" else hashes.SHA256()
        der = key.sign(signing_input.encode(), ec.ECDSA(h))
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        sig = key.sign(signing_input.encode(),
                       padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256().digest_size), hashes.SHA256())
    return f"{signing_input}.{b64u(sig)}"


def _verify_chain(chain: list[x509.Certificate], roots: Sequence[x509.Certificate], at: datetime) -> None:
    """Walk signer → … → a configured root, checking validity and signatures."""
    root_by_subject = {r.subject.public_bytes(): r for r in roots}
    for cert in chain:
        if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
            raise EventVerificationError(f"certificate {cert.subject.rfc4514_string()} is not valid now")
    path = list(chain)
    for _ in range(8):
        cert = path[-1]
        issuer = root_by_subject.get(cert.issuer.public_bytes())
        if issuer is None:
            nxt = next((c for c in chain if c.subject == cert.issuer and c is not cert), None)
            if nxt is None or nxt in path:
                raise EventVerificationError("x5c does not chain to a trusted root")
            try:
                cert.verify_directly_issued_by(nxt)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise EventVerificationError("bad signature in x5c chain") from exc
            path.append(nxt)
            continue
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise EventVerificationError("bad signature in x5c chain") from exc
        return
    raise EventVerificationError("x5c chain too long")


def verify_event(token: str | bytes, roots: Sequence[x509.Certificate], at: datetime | None = None
                 ) -> RevocationEvent:
    """Verify a compact JWS revocation event against ``roots`` and return the event.

    Raises :class:`EventVerificationError` for anything untrusted or malformed."""
    if isinstance(token, bytes):
        if len(token) > MAX_EVENT_BYTES:
            raise EventVerificationError("event too large")
        token = token.decode("ascii", "replace")
    if len(token) > MAX_EVENT_BYTES:
        raise EventVerificationError("event too large")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise EventVerificationError("not a compact JWS")
    try:
        header = json.loads(b64u_decode(parts[0]))
        payload = b64u_decode(parts[1])
        sig = b64u_decode(parts[2])
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise EventVerificationError("malformed JWS") from exc
    if header.get("typ") != JWS_TYPE or not chain:
        raise EventVerificationError("wrong JWS type")
    alg = header.get("alg")
    signer = chain[0]
    try:
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise EventVerificationError("signer has no EKU") from exc
    if PUSH_SIGNER_EKU not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        raise EventVerificationError("signer is not a revocation push signer")
    _verify_chain(chain, roots, at or datetime.now(UTC))
    pub = signer.public_key()
    data = f"{parts[0]}.{parts[1]}".encode()
    try:
        if alg in ("ES256", "ES384") and isinstance(pub, ec.EllipticCurvePublicKey):
            size = len(sig) // 2
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            pub.verify(der, data, ec.ECDSA(hashes.SHA384() if alg == "ES384" else hashes.SHA256()))
        elif alg == "PS256" and isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256().digest_size),
                       hashes.SHA256())
        else:
            raise EventVerificationError(f"unsupported alg {alg!r}")
    except InvalidSignature as exc:
        raise EventVerificationError("bad event signature") from exc
    return RevocationEvent.from_json(payload)
