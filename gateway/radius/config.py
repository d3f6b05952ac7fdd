"""The responder's RADIUS configuration file (``--radius radius.yaml``)::

    nas_identifier: gw.example.test
    timeout: 2            # seconds per try
    retries: 2            # re-sends per server before failing over
    servers:              # authentication, in failover order
      - {host: 10.0.0.5, port: 1812, secret: file:/etc/ikepki/radius.secret}
      - {host: 10.0.0.6, port: 1812, secret: env:RADIUS_SECRET}
    accounting:           # RFC 2866; optional
      - {host: 10.0.0.5, port: 1813, secret: file:/etc/ikepki/radius.secret}
    interim_interval: 0   # seconds; the Access-Accept's Acct-Interim-Interval wins
    dae:                  # RFC 5176 Disconnect-Request listener; optional
      listen: 0.0.0.0:3799
      secret: file:/etc/ikepki/dae.secret
      clients: [10.0.0.5] # source addresses allowed to send

Secrets only by reference (``file:`` / ``env:``); they are never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.radius.client import RadiusClient, Server, resolve_secret


@dataclass(frozen=True)
class EapConfig:
    """Where EAP goes: RADIUS servers in failover order and what identifies us to them."""

    client: RadiusClient
    nas_identifier: str = "ikepki-responder"
    accounting: RadiusClient | None = None
    interim_interval: float = 0.0  # seconds; 0 = only Start/Stop unless the server sends Acct-Interim-Interval


class RadiusConfigError(ValueError):
    """The RADIUS configuration is invalid."""


@dataclass(frozen=True)
class DaeConfig:
    host: str
    port: int
    secret: bytes
    clients: frozenset[str]  # never empty: the loader refuses a DAE without allowed clients
    require_event_timestamp: bool = True  # RFC 5176 §6.3: discard requests without Event-Timestamp


def _servers(items: Any, what: str) -> list[Server]:
    if not isinstance(items, list) or not items:
        raise RadiusConfigError(f"{what}: a non-empty list of servers is required")
    out = []
    for i, s in enumerate(items):
        if not isinstance(s, dict) or "host" not in s or "secret" not in s:
            raise RadiusConfigError(f"{what}[{i}]: host and secret (file:/env:) are required")
        out.append(Server(str(s["host"]), int(s.get("port", 1812 if what == "servers" else 1813)),
                          resolve_secret(str(s["secret"])), str(s.get("name", ""))))
    return out


def load(path: Path) -> tuple[EapConfig, DaeConfig | None]:
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise RadiusConfigError("the RADIUS configuration must be a mapping")
    timeout, retries = float(doc.get("timeout", 2.0)), int(doc.get("retries", 2))
    if not 0 < timeout <= 30 or not 0 <= retries <= 10:
        raise RadiusConfigError("timeout must be in (0, 30] and retries in [0, 10]")
    auth = RadiusClient(_servers(doc.get("servers"), "servers"), timeout, retries)
    acct = RadiusClient(_servers(doc["accounting"], "accounting"), timeout, retries) if doc.get("accounting") else None
    eap = EapConfig(auth, str(doc.get("nas_identifier", "ikepki-responder")), acct,
                    float(doc.get("interim_interval", 0)))
    dae = None
    if doc.get("dae"):
        d = doc["dae"]
        host, _, port = str(d.get("listen", "127.0.0.1:3799")).rpartition(":")
        clients = d.get("clients")
        if not isinstance(clients, list) or not clients:
            raise RadiusConfigError("dae.clients: a non-empty list of allowed source addresses is required")
        require_ts = d.get("require_event_timestamp", True)
        if not isinstance(require_ts, bool):
            raise RadiusConfigError("dae.require_event_timestamp must be true or false")
        dae = DaeConfig(host.strip("[]") or "0.0.0.0", int(port), resolve_secret(str(d["secret"])),
                        frozenset(str(c) for c in clients), require_ts)
    return eap, dae
