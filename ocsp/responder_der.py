"""OCSP response encoding (RFC 6960 §4.2), hand-built so one response can carry several
SingleResponses and echo each request's CertID byte for byte.

    OCSPResponse      ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ResponseBytes OPTIONAL }
    BasicOCSPResponse ::= SEQUENCE { tbsResponseData ResponseData, signatureAlgorithm AlgorithmIdentifier,
                                     signature BIT STRING, certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
    ResponseData      ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, responderID ResponderID,
                                     producedAt GeneralizedTime, responses SEQUENCE OF SingleResponse,
                                     responseExtensions [1] EXPLICIT Extensions OPTIONAL }
    SingleResponse    ::= SEQUENCE { certID CertID, certStatus CertStatus, thisUpdate GeneralizedTime,
                                     nextUpdate [0] EXPLICIT GeneralizedTime OPTIONAL, ... }
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from ca.der import der_generalized_time, der_octets, der_oid, der_seq, der_tlv, explicit

OID_BASIC = der_oid("1.3.6.1.5.5.7.48.1.1")
OID_NONCE = der_oid("1.3.6.1.5.5.7.48.1.2")
OID_EXTENDED_REVOKE = der_oid("1.3.6.1.5.5.7.48.1.9")  # RFC 6960 §4.4.8
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ResponseStatus(enum.IntEnum):
    """OCSPResponseStatus (RFC 6960 §4.2.1)."""

    successful = 0
    malformedRequest = 1
    internalError = 2
    tryLater = 3
    sigRequired = 5
    unauthorized = 6


def error_response(status: ResponseStatus) -> bytes:
    """An unsigned OCSPResponse without responseBytes."""
    return bytes([0x30, 0x03, 0x0A, 0x01, int(status)])


@dataclass(frozen=True, slots=True)
class CertState:
    """What the responder says about one certificate: good, revoked (time, reason) or unknown."""

    kind: str  # good | revoked | unknown
    revoked_at: datetime | None = None
    reason: int | None = None

    def encode(self) -> bytes:
        if self.kind == "good":
            return b"\x80\x00"
        if self.kind == "unknown":
            return b"\x82\x00"
        assert self.revoked_at is not None
        body = der_generalized_time(self.revoked_at)
        if self.reason is not None:
            body += explicit(0, der_tlv(0x0A, bytes([self.reason])))
        return der_tlv(0xA1, body)


GOOD = CertState("good")
UNKNOWN = CertState("unknown")
NOT_ISSUED = CertState("revoked", EPOCH, 6)  # RFC 6960 §2.2: revoked, certificateHold, 1970-01-01


def single_response(cert_id_der: bytes, state: CertState, this_update: datetime, next_update: datetime) -> bytes:
    return der_seq(cert_id_der, state.encode(), der_generalized_time(this_update),
                   explicit(0, der_generalized_time(next_update)))


def response_data(responder_key_hash: bytes, produced_at: datetime, singles: list[bytes],
                  nonce_ext_value: bytes | None, extended_revoke: bool) -> bytes:
    """ResponseData with responderID byKey (SHA-1 of the signer's public key, §4.2.2.3)."""
    exts = []
    if nonce_ext_value is not None:
        exts.append(der_seq(OID_NONCE, der_octets(nonce_ext_value)))
    if extended_revoke:
        exts.append(der_seq(OID_EXTENDED_REVOKE, der_octets(b"\x05\x00")))
    return der_seq(der_tlv(0xA2, der_octets(responder_key_hash)), der_generalized_time(produced_at),
                   der_seq(*singles), explicit(1, der_seq(*exts)) if exts else b"")


def certs_field(certs_der: list[bytes]) -> bytes:
    """BasicOCSPResponse ``certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL``: the last field,
    so every response it is in ends with these bytes."""
    return explicit(0, der_seq(*certs_der)) if certs_der else b""


def ocsp_response(tbs: bytes, alg_id: bytes, signature: bytes, certs_der: list[bytes]) -> bytes:
    """A successful OCSPResponse around a BasicOCSPResponse."""
    basic = der_seq(tbs, alg_id, der_tlv(0x03, b"\x00" + signature), certs_field(certs_der))
    return der_seq(b"\x0a\x01\x00", explicit(0, der_seq(OID_BASIC, der_octets(basic))))
