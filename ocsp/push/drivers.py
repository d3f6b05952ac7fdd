"""Gateway drivers: how one batch of signed revocation events reaches one gateway.

Every driver is idempotent on (issuer, serial): re-delivering an event terminates nothing new
(strongSwan: the SA is already gone; the responder and webhooks dedupe on event id / serial).
A driver returns, per event id, ``None`` (delivered) or an error line (retry later).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import vici

from ca.revocation_event import EVENT_REVOKED, MEDIA_TYPE, RevocationEvent
from ca.store.deliveries import Gateway
from ocsp.push.sessions import identity_keys, peer_keys

log = logging.getLogger("ikepki.push")
USER_AGENT = "ikepki-push/1"
VICI_MAX_VALUE = 65_535 - 64  # VICI encodes value lengths in 16 bits (and the message has headers)


@dataclass(frozen=True)
class SignedEvent:
    event: RevocationEvent
    jws: str
    issuer_id: str
    subject: str = ""  # RFC 4514 subject of the certificate (for DN identities)


@dataclass
class DeliveryOutcome:
    errors: dict[str, str | None]  # event_id -> None (delivered) | error
    terminated: int = 0
    notes: list[str] = field(default_factory=list)


class GatewayDriver(Protocol):
    kind: str

    def deliver(self, gateway: Gateway, events: Sequence[SignedEvent]) -> DeliveryOutcome: ...


def _all(events: Sequence[SignedEvent], error: str | None) -> dict[str, str | None]:
    return {e.event.event_id: error for e in events}


class _HttpDriver:
    kind = "webhook"

    def __init__(self, timeout: float, verify: Any = True) -> None:
        self.client = httpx.Client(timeout=timeout, verify=verify, headers={"user-agent": USER_AGENT})

    def target(self, gateway: Gateway) -> str:
        return gateway.url

    def deliver(self, gateway: Gateway, events: Sequence[SignedEvent]) -> DeliveryOutcome:
        errors: dict[str, str | None] = {}
        terminated = 0
        for e in events:
            try:
                resp = self.client.post(self.target(gateway), content=e.jws.encode(),
                                        headers={"content-type": MEDIA_TYPE, "x-ikepki-event-id": e.event.event_id})
            except httpx.HTTPError as exc:
                # the gateway is unreachable: the rest of the batch would fail the same way
                rest = _all(events[len(errors):], f"{type(exc).__name__}: {exc}"[:300])
                return DeliveryOutcome({**errors, **rest}, terminated)
            if 200 <= resp.status_code < 300:
                errors[e.event.event_id] = None
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    terminated += int(resp.json().get("terminated_sas", 0))
            else:
                errors[e.event.event_id] = f"HTTP {resp.status_code}: {resp.text[:200]}"
        return DeliveryOutcome(errors, terminated)


class WebhookDriver(_HttpDriver):
    """Generic signed webhook: POST the compact JWS (``application/jose``) to the URL."""

    kind = "webhook"


class ResponderDriver(_HttpDriver):
    """The bundled IKEv2 responder: POST the JWS to ``<url>/v1/revocations`` (gateway/push.py)."""

    kind = "responder"

    def target(self, gateway: Gateway) -> str:
        return gateway.url.rstrip("/") + "/v1/revocations"


class VICIGatewayDriver:
    """strongSwan over VICI (strongswan.md §8): load the fresh CRL, flush the CRL and OCSP
    caches, then terminate every IKE_SA whose ``remote-id`` is one of the revoked identities."""

    kind = "vici"

    def __init__(self, timeout: float, crl_for: Callable[[str, set[int]], bytes | None] | None = None) -> None:
        self.timeout = timeout
        self.crl_for = crl_for

    def _session(self, url: str) -> tuple[socket.socket, vici.Session]:
        if not url.startswith("unix://"):
            raise ValueError(f"VICI URL must be unix:///path/charon.vici, not {url!r}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(url[len("unix://"):])
        return sock, vici.Session(sock)

    def deliver(self, gateway: Gateway, events: Sequence[SignedEvent]) -> DeliveryOutcome:
        try:
            sock, session = self._session(gateway.url)
        except (OSError, ValueError) as exc:
            return DeliveryOutcome(_all(events, f"VICI connect: {exc}"[:300]))
        try:
            outcome = DeliveryOutcome(_all(events, None))
            self._load_crls(session, events, outcome)
            session.flush_certs({"type": "X509_CRL"})
            session.flush_certs({"type": "OCSP_RESPONSE"})
            outcome.terminated = self._terminate(session, events)
            return outcome
        except (OSError, vici.exception.CommandException, vici.exception.SessionException) as exc:
            return DeliveryOutcome(_all(events, f"VICI: {type(exc).__name__}: {exc}"[:300]))
        finally:
            sock.close()

    def _load_crls(self, session: vici.Session, events: Sequence[SignedEvent], outcome: DeliveryOutcome) -> None:
        if self.crl_for is None:
            return
        by_issuer: dict[str, set[int]] = {}
        for e in events:
            wanted = by_issuer.setdefault(e.issuer_id, set())
            if e.event.type == EVENT_REVOKED:
                wanted.add(e.event.serial_int)
        for issuer_id, serials in by_issuer.items():
            der = self.crl_for(issuer_id, serials)
            if der is None:
                outcome.notes.append(f"no CRL for {issuer_id}")
            elif len(der) > VICI_MAX_VALUE:
                # VICI values carry a 16-bit length: a big CRL cannot be pushed. The cache flush
                # that follows makes the gateway fetch OCSP/CRL from its URLs on the next IKE_AUTH.
                outcome.notes.append(f"CRL of {issuer_id} is {len(der)} bytes, over the VICI limit: not loaded")
            else:
                session.load_cert({"type": "X509_CRL", "flag": "NONE", "data": der})

    def _terminate(self, session: vici.Session, events: Sequence[SignedEvent]) -> int:
        wanted: set[str] = set()
        for e in events:
            if e.event.type == EVENT_REVOKED:
                wanted |= identity_keys(e.event.identities, e.subject)
        if not wanted:
            return 0
        victims: list[str] = []
        for entry in session.list_sas({"noblock": "yes"}):
            for sa in entry.values():
                remote = sa.get("remote-id", b"").decode(errors="replace")
                if peer_keys(remote) & wanted:
                    victims.append(sa["uniqueid"].decode())
        for ike_id in victims:
            try:
                for _ in session.terminate({"ike-id": ike_id, "force": "yes", "timeout": "1000"}):
                    pass
            except vici.exception.CommandException as exc:  # already gone: idempotent
                log.info("terminate ike-id %s: %s", ike_id, exc)
        return len(victims)


def build_drivers(timeout: float, verify: Any, crl_for: Callable[[str, set[int]], bytes | None] | None
                  ) -> dict[str, GatewayDriver]:
    return {"vici": VICIGatewayDriver(timeout, crl_for), "responder": ResponderDriver(timeout, verify),
            "webhook": WebhookDriver(timeout, verify)}
