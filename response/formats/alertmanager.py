"""Prometheus Alertmanager webhook receiver payload, version 4.

Alertmanager (``webhook_config``) POSTs ``{"version": "4", "groupKey", "truncatedAlerts",
"status", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
"alerts": [{"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
"fingerprint"}]}`` (Alertmanager docs, "Configuration: <webhook_config>"). It can authenticate only
through its ``http_config`` (bearer token, basic auth, TLS client certificate): no body signature.
A firing alert's ``endsAt`` is Go's zero time ``0001-01-01T00:00:00Z`` (parsed as "none").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from response.alerts import Alert, AlertStatus, flatten
from response.errors import HookRefused, Refusal

FORMAT = "alertmanager"
MAX_ALERTS = 1000


def parse(source: str, body: bytes) -> list[Alert]:
    """Every alert of one notification; ``MALFORMED`` for anything but a version-4 payload."""
    data = _json(body)
    if not isinstance(data, dict) or data.get("version") != "4":
        raise HookRefused(Refusal.MALFORMED, "not an Alertmanager webhook payload of version 4")
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or len(alerts) > MAX_ALERTS:
        raise HookRefused(Refusal.MALFORMED, f"'alerts' must be a list of at most {MAX_ALERTS}")
    out: list[Alert] = []
    for i, item in enumerate(alerts):
        if not isinstance(item, dict):
            raise HookRefused(Refusal.MALFORMED, f"alerts[{i}] is not an object")
        status = item.get("status")
        fingerprint = item.get("fingerprint")
        labels = item.get("labels")
        if status not in ("firing", "resolved") or not isinstance(fingerprint, str) or not fingerprint \
                or len(fingerprint) > 128 or not isinstance(labels, dict):
            raise HookRefused(Refusal.MALFORMED, f"alerts[{i}] needs status, fingerprint and labels")
        fields = flatten({"labels": labels, "annotations": item.get("annotations") or {}})
        fields["status"] = status
        out.append(Alert(source, FORMAT, fingerprint, AlertStatus(status), fields,
                         parse_time(item.get("startsAt")), parse_time(item.get("endsAt"))))
    return out


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 time -> aware UTC; Go's zero time (year 1) and anything unparsable -> None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.year <= 1:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HookRefused(Refusal.MALFORMED, "body is not JSON") from None
