"""SCEP wire vocabulary (RFC 8894 §3.2.1.2 to §3.2.1.4) and the request/response shapes the
service passes between the HTTP edge and the domain logic."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MessageType(enum.Enum):
    """messageType values (RFC 8894 §3.2.1.2), PrintableString decimal on the wire."""

    CertRep = "3"
    RenewalReq = "17"
    PKCSReq = "19"
    CertPoll = "20"  # GetCertInitial in draft versions
    GetCert = "21"
    GetCRL = "22"


class PkiStatus(enum.Enum):
    """pkiStatus (RFC 8894 §3.2.1.3)."""

    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class FailInfo(enum.Enum):
    """failInfo (RFC 8894 §3.2.1.4)."""

    badAlg = "0"  # unrecognized or unsupported algorithm
    badMessageCheck = "1"  # integrity check (signature verification) failed
    badRequest = "2"  # transaction not permitted or supported
    badTime = "3"  # signingTime not sufficiently close to the system time
    badCertId = "4"  # no certificate could be identified matching the criteria


@dataclass(frozen=True)
class ScepReply:
    """What the service decided for one pkiMessage: the CertRep to build."""

    status: PkiStatus
    fail_info: FailInfo | None = None
    payload: bytes | None = None  # messageData to envelope (degenerate PKCS#7 with certs, or a CRL)
    detail: str = ""  # for logs only, never on the wire


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    content_type: str
