"""Dynamic challenge validation: POST the request's details as JSON to a configured URL.

Only a 2xx answer allows the enrollment; any other status, a timeout or a connection error
denies it (fail closed) and is logged without the challenge password.
"""

from __future__ import annotations

import enum
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("ikepki.scep.webhook")


class WebhookVerdict(enum.Enum):
    ALLOW = "allowed"
    DENY = "denied"
    UNREACHABLE = "unreachable"


def _where(url: str) -> str:
    """scheme://host:port only: a URL may carry credentials or tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def ask_webhook(url: str, timeout: float, payload: dict[str, Any]) -> WebhookVerdict:
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.post(url, json=payload, headers={"user-agent": "ikepki-scep"})
    except httpx.HTTPError as exc:
        log.warning("scep webhook %s unreachable: %s", _where(url), exc.__class__.__name__)
        return WebhookVerdict.UNREACHABLE
    if 200 <= response.status_code < 300:
        return WebhookVerdict.ALLOW
    log.info("scep webhook %s answered %d for transaction %s", _where(url), response.status_code,
             payload.get("transaction_id"))
    return WebhookVerdict.DENY
