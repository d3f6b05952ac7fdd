"""What the parts of the ACME service share: request/response values, the verified request, the rate
limiter and the service's state (:class:`AcmeBase`). The protocol parts are mixins in ``verification``,
``accounts``, ``orders``, ``authorizations`` and ``revocation``; :class:`enrollment.acme.service.AcmeService`
composes them and routes requests to them."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ca.model import RevocationReason
from ca.ports import CoreServices
from enrollment.acme.challenges import ChallengeRegistry
from enrollment.acme.jws import Jws, PublicKey, b64d
from enrollment.acme.model import Account
from enrollment.acme.problems import malformed
from enrollment.acme.settings import AcmeSettings
from enrollment.acme.store import AcmeStore
from enrollment.acme.validation_queue import FairValidationQueue

log = logging.getLogger("ikepki.acme")
JOSE = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
REVOCABLE = {RevocationReason.unspecified, RevocationReason.keyCompromise, RevocationReason.affiliationChanged,
             RevocationReason.superseded, RevocationReason.cessationOfOperation,
             RevocationReason.privilegeWithdrawn}
PROFILE_DESCRIPTIONS = {"machine": "IKEv2 machine identity (ipsecIKE + clientAuth)",
                        "gateway": "IKEv2 gateway (ipsecIKE + serverAuth + clientAuth)",
                        "user": "IKEv2 user identity (ipsecIKE + clientAuth, email names)"}
JWK_ROUTES = ("/new-account", "/revoke-cert")


@dataclass(frozen=True)
class RequestContext:
    method: str
    path: str  # relative to the ACME base, e.g. /new-order
    base: str  # https://host:port/acme
    source: str
    content_type: str = ""
    body: bytes = b""

    @property
    def url(self) -> str:
        return self.base + self.path


@dataclass
class Response:
    status: int
    body: Any = None  # dict -> JSON; bytes as is
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Signed:
    """A verified POST: the JWS, its payload and who signed it (account, or a bare jwk)."""

    jws: Jws
    payload: dict[str, Any] | None
    account: Account | None
    jwk: dict[str, Any] | None
    key: PublicKey


class RateLimiter:
    """Fixed-window counters per key (in-process; each replica enforces its own share)."""

    def __init__(self, window: int) -> None:
        self.window = max(window, 1)
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))

    def hit(self, key: str, limit: int) -> int | None:
        """Count one request; the seconds to wait when over ``limit`` (0 = unlimited)."""
        if limit <= 0:
            return None
        now = int(time.time())
        slot = now // self.window
        with self._lock:
            if len(self._counts) > 100_000:
                self._counts.clear()
            current, count = self._counts[key]
            count = count + 1 if current == slot else 1
            self._counts[key] = (slot, count)
        return (slot + 1) * self.window - now if count > limit else None


class AccountCache:
    """Accounts by id, least recently used dropped beyond ``size`` (thread safe). Only a hint:
    see the module docstring for how a stale entry is detected."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._accounts: OrderedDict[str, Account] = OrderedDict()

    def get(self, account_id: str) -> Account | None:
        with self._lock:
            account = self._accounts.get(account_id)
            if account is not None:
                self._accounts.move_to_end(account_id)
            return account

    def put(self, account: Account) -> None:
        with self._lock:
            self._accounts[account.id] = account
            self._accounts.move_to_end(account.id)
            while len(self._accounts) > self.size:
                self._accounts.popitem(last=False)

    def drop(self, account_id: str) -> None:
        with self._lock:
            self._accounts.pop(account_id, None)


class AcmeBase:
    """State shared by the ACME service's parts (set by :class:`enrollment.acme.service.AcmeService`)."""

    dep: CoreServices
    settings: AcmeSettings
    registry: ChallengeRegistry
    store: AcmeStore
    accounts: AccountCache
    limiter: RateLimiter
    validations: FairValidationQueue

    def _cert_by_ari_id(self, cert_id: Any) -> Any:
        """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER value bytes)."""
        if not isinstance(cert_id, str) or cert_id.count(".") != 1 or len(cert_id) > 200:
            raise malformed("renewalInfo certificate id must be AKI.serial in base64url")
        aki_b64, serial_b64 = cert_id.split(".")
        aki, serial_bytes = b64d(aki_b64, "keyIdentifier"), b64d(serial_b64, "serial")
        if not serial_bytes or serial_bytes[0] & 0x80:
            raise malformed("serial must be a positive DER INTEGER value")
        info = self.dep.store.get(int.from_bytes(serial_bytes, "big"))
        if info is None or self.dep.issuers[info.issuer_id].key_id != aki:
            return None
        return info


def require_payload(s: Signed) -> dict[str, Any]:
    if s.payload is None:
        raise malformed("this request needs a JSON payload (it is not a POST-as-GET)")
    return s.payload
