"""Check that a gateway URL really receives ikepki's revocation pushes (``ikepki gateways add``
checks before registering; ``ikepki gateways test NAME`` checks a registered one).

- ``responder`` / ``webhook``: POST a signed ``test`` event (ca/revocation_event.py) exactly as
  the push worker would (same driver target, TLS verification, signer and media type). The
  bundled responder answers ``200 {"accepted": true, "test": true}`` and changes nothing; a
  webhook must answer 2xx.
- ``vici``: open the socket and ask charon for its version (VICI ``version`` command).

A failure says what is wrong in one line: unreachable, a TLS client talking to a plain-HTTP
listener (and the reverse), an untrusted TLS certificate, not a push receiver, or a receiver that
does not trust ikepki's push signer.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import vici

from ca.errors import ErrorKind
from ca.ports import ServiceKeys
from ca.revocation_event import EVENT_TEST, MEDIA_TYPE, RevocationEvent, now_rfc3339, sign_event
from ca.store.deliveries import Gateway
from ocsp.push.drivers import USER_AGENT, ResponderDriver, WebhookDriver
from ocsp.push.settings import PushSettings
from ocsp.push.worker import push_signer, tls_verify

MAX_DETAIL = 300


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    kind: ErrorKind | None = None  # why it failed: UNAVAILABLE (retry later) or BAD_REQUEST (fix the URL/trust)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "error": self.kind.value if self.kind else None}


def _fail(kind: ErrorKind, detail: str) -> ProbeResult:
    return ProbeResult(False, detail[:MAX_DETAIL], kind)


def signed_test_event(deployment: ServiceKeys, now_text: str | None = None) -> tuple[RevocationEvent, str]:
    """A ``test`` event signed by the push signer (serial 0, nothing to revoke)."""
    from cryptography import x509

    key, chain = push_signer(deployment)
    issuer = chain[-1]
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        ski = ""
    event = RevocationEvent(event_id="test-" + secrets.token_hex(8), type=EVENT_TEST,
                            issuer=issuer.subject.rfc4514_string(), issuer_key_id=ski, serial="0", reason=None,
                            revoked_at=None, created_at=now_text or now_rfc3339())
    return event, sign_event(event, key, chain)


def probe(deployment: ServiceKeys, kind: str, url: str, settings: PushSettings | None = None) -> ProbeResult:
    settings = settings or deployment.settings_for(PushSettings, "push")
    if kind == "vici":
        return _probe_vici(url, settings.timeout_seconds)
    gateway = Gateway(id=0, name="probe", kind=kind, url=url, enabled=True)
    target = (ResponderDriver if kind == "responder" else WebhookDriver)(1.0).target(gateway)
    event, jws = signed_test_event(deployment, now_rfc3339(deployment.clock.now()))
    verify = tls_verify(deployment, settings)
    try:
        with httpx.Client(timeout=settings.timeout_seconds, verify=verify,
                          headers={"user-agent": USER_AGENT}) as client:
            resp = client.post(target, content=jws.encode(),
                               headers={"content-type": MEDIA_TYPE, "x-ikepki-event-id": event.event_id})
    except httpx.HTTPError as exc:
        return _transport_failure(url, target, exc, settings.timeout_seconds)
    return _judge(kind, target, resp)


def _transport_failure(url: str, target: str, exc: httpx.HTTPError, timeout: float) -> ProbeResult:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if url.startswith("https://"):
        if "certificate verify failed" in lowered or "hostname mismatch" in lowered:
            return _fail(ErrorKind.BAD_REQUEST, f"{target}: the TLS certificate is not trusted ({exc}); ikepki "
                                                "trusts the system roots and its own root (push.verify_tls)")
        if isinstance(exc, httpx.TimeoutException | httpx.ConnectError | httpx.RemoteProtocolError | httpx.ReadError) \
                and _speaks_plain_http(target, timeout):
            return _fail(ErrorKind.BAD_REQUEST, f"{target}: the listener speaks plain HTTP, not TLS — register "
                                                "http://… or serve the listener with TLS (ikepki responder serve "
                                                "--push-tls-cert/--push-tls-key)")
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) and _speaks_tls(target, timeout):
        return _fail(ErrorKind.BAD_REQUEST, f"{target}: the listener speaks TLS — register https://…")
    if isinstance(exc, httpx.ConnectError | httpx.TimeoutException):
        return _fail(ErrorKind.UNAVAILABLE, f"{target} is unreachable: {text}")
    return _fail(ErrorKind.BAD_REQUEST, f"{target}: {text}")


def _host_port(target: str) -> tuple[str, int]:
    parts = urlsplit(target)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _speaks_plain_http(target: str, timeout: float) -> bool:
    """Does ``host:port`` of an https URL answer a plain HTTP request with an HTTP status line?"""
    host, port = _host_port(target)
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 3.0)) as sock:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def _speaks_tls(target: str, timeout: float) -> bool:
    """Does ``host:port`` of an http URL complete a TLS handshake (certificate not checked)?"""
    import ssl

    host, port = _host_port(target)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 3.0)) as sock, \
                ctx.wrap_socket(sock, server_hostname=host or None):
            return True
    except OSError:
        return False


def _judge(kind: str, target: str, resp: httpx.Response) -> ProbeResult:
    try:
        body = resp.json()
    except ValueError:
        body = None
    detail = f"{target}: HTTP {resp.status_code}"
    if kind == "responder":
        if resp.status_code == 200 and isinstance(body, dict) and body.get("accepted") is True \
                and body.get("test") is True:
            return ProbeResult(True, f"{target}: the responder verified and acknowledged a signed test event")
        if resp.status_code == 401:
            return _fail(ErrorKind.BAD_REQUEST, f"{detail}: the responder does not trust ikepki's push signer "
                                                f"({_error(body)}); put ikepki's root-ca.pem into its --ca-bundle")
        if resp.status_code == 400 and "unknown event type" in _error(body):
            return _fail(ErrorKind.BAD_REQUEST, f"{detail}: the responder predates test events; upgrade it, or "
                                                "register with --no-check")
        if resp.status_code in (404, 405) or not isinstance(body, dict):
            return _fail(ErrorKind.BAD_REQUEST, f"{detail}: no ikepki push receiver at this URL (give the "
                                                "responder's push listener base URL, e.g. https://gw:8444)")
        return _fail(ErrorKind.BAD_REQUEST, f"{detail}: {_error(body) or resp.text[:120]}")
    if 200 <= resp.status_code < 300:
        return ProbeResult(True, f"{target}: the webhook accepted a signed test event ({resp.status_code})")
    return _fail(ErrorKind.BAD_REQUEST, f"{detail}: the webhook refused a signed test event: {resp.text[:160]}")


def _error(body: Any) -> str:
    return str(body.get("error", ""))[:160] if isinstance(body, dict) else ""


def _probe_vici(url: str, timeout: float) -> ProbeResult:
    if not url.startswith("unix://"):
        return _fail(ErrorKind.BAD_REQUEST, "a vici gateway URL is unix:///path/to/charon.vici")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(url[len("unix://"):])
        version = vici.Session(sock).version()
    except FileNotFoundError:
        return _fail(ErrorKind.UNAVAILABLE, f"{url}: no such socket (is charon running with the vici plugin?)")
    except PermissionError as exc:
        return _fail(ErrorKind.BAD_REQUEST, f"{url}: {exc}")
    except (OSError, vici.exception.SessionException) as exc:
        return _fail(ErrorKind.UNAVAILABLE, f"{url}: {type(exc).__name__}: {exc}")
    finally:
        sock.close()
    name = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in version.items()}
    return ProbeResult(True, f"{url}: {name.get('daemon', 'charon')} {name.get('version', '')} answers over VICI")
