"""The client side of the OAuth 2.0 Device Authorization Grant (RFC 8628) used by
``ikepki user enroll``: request a device code (§3.1-3.2), show the user where to go (§3.3), and
poll the token endpoint (§3.4-3.5) honouring ``interval`` and ``slow_down`` (+5 s)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ca.errors import ErrorKind, PKIError

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_INTERVAL = 60


@dataclass(frozen=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


def _json(resp: httpx.Response, what: str) -> dict[str, Any]:
    try:
        doc = resp.json()
    except ValueError:
        raise PKIError(ErrorKind.UNAVAILABLE, f"{what}: answer is not JSON ({resp.status_code})") from None
    if not isinstance(doc, dict):
        raise PKIError(ErrorKind.UNAVAILABLE, f"{what}: answer is not a JSON object")
    return doc


def start(client: httpx.Client, endpoint: str, client_id: str, scopes: list[str]) -> DeviceCode:
    """§3.1 Device Authorization Request -> §3.2 Response."""
    resp = client.post(endpoint, data={"client_id": client_id, "scope": " ".join(scopes)})
    doc = _json(resp, "device authorization")
    if resp.status_code != 200:
        raise PKIError(ErrorKind.UNAUTHORIZED, f"device authorization refused: {doc.get('error')}: "
                                               f"{str(doc.get('error_description', ''))[:200]}")
    try:
        return DeviceCode(str(doc["device_code"]), str(doc["user_code"]), str(doc["verification_uri"]),
                          doc.get("verification_uri_complete"), int(doc.get("expires_in", 600)),
                          max(1, min(int(doc.get("interval", 5)), MAX_INTERVAL)))
    except (KeyError, ValueError, TypeError):
        raise PKIError(ErrorKind.UNAVAILABLE, "device authorization response lacks required members") from None


def poll(client: httpx.Client, token_endpoint: str, client_id: str, code: DeviceCode,
         sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic
         ) -> dict[str, Any]:
    """§3.4 Device Access Token Request until §3.5 success, ``access_denied`` or ``expired_token``."""
    interval = code.interval
    deadline = monotonic() + code.expires_in
    while True:
        sleep(interval)
        resp = client.post(token_endpoint, data={"grant_type": GRANT, "device_code": code.device_code,
                                                 "client_id": client_id})
        doc = _json(resp, "token endpoint")
        if resp.status_code == 200:
            return doc
        error = doc.get("error")
        if error == "authorization_pending":
            pass
        elif error == "slow_down":
            interval = min(interval + 5, MAX_INTERVAL)  # §3.5: increase by 5 seconds for this and later requests
        elif error == "access_denied":
            raise PKIError(ErrorKind.UNAUTHORIZED, "the sign-in was denied")
        elif error == "expired_token":
            raise PKIError(ErrorKind.UNAUTHORIZED, "the code expired before the sign-in finished: run it again")
        else:
            raise PKIError(ErrorKind.UNAUTHORIZED, f"token endpoint: {str(error)[:60]}: "
                                                   f"{str(doc.get('error_description', ''))[:200]}")
        if monotonic() > deadline:
            raise PKIError(ErrorKind.UNAUTHORIZED, "the code expired before the sign-in finished: run it again")
