"""Live IKE SAs on gateways: the push package's implementation of the core's
:class:`ca.revocation.LiveSessionProbe` port (entry point ``ikepki.live_sessions``), and the
identity normalisation the VICI driver uses to pick the SAs to terminate.

strongSwan is asked over VICI (``list-sas``, strongswan.md §8); the bundled responder over its
``GET /v1/sas``. Best effort: a gateway that does not answer within the timeout is left out
("unknown"), webhooks cannot tell.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ca.model import CertificateInfo
from ca.revocation import GatewaySessions


def identity_keys(identities: Iterable[str], subject: str = "") -> set[str]:
    """IKE identities a certificate may present, normalised for comparison with an SA's peer ID."""
    keys = {i.partition(":")[2].strip().lower() for i in identities if ":" in i}
    if subject:
        keys.add(dn_key(subject))
    keys.discard("")
    return keys


def dn_key(dn: str) -> str:
    """Order-insensitive DN key: strongSwan prints ``C=US, O=x, CN=y``; RFC 4514 ``CN=y,O=x,C=US``."""
    parts = sorted(p.strip().lower() for p in dn.replace(", ", ",").split(",") if "=" in p)
    return "dn:" + "|".join(parts)


def peer_keys(peer_id: str) -> set[str]:
    return {peer_id.strip().lower(), dn_key(peer_id)} if "=" in peer_id else {peer_id.strip().lower()}


def _vici_sessions(url: str, timeout: float) -> GatewaySessions:
    import vici

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(url[len("unix://"):])
        peers: set[str] = set()
        for entry in vici.Session(sock).list_sas({"noblock": "yes"}):
            for sa in entry.values():
                peers |= peer_keys(sa.get("remote-id", b"").decode(errors="replace"))
        return GatewaySessions(frozenset(peers), frozenset())
    finally:
        sock.close()


def _responder_sessions(url: str, timeout: float, verify: Any = True) -> GatewaySessions:
    import httpx

    sas = httpx.get(url.rstrip("/") + "/v1/sas", timeout=timeout, verify=verify).json().get("sas", [])
    peers = set().union(*(peer_keys(str(sa["peer_id"])) for sa in sas if sa.get("peer_id"))) if sas else set()
    serials = {int(sa["serial"], 16) for sa in sas if sa.get("serial")}
    return GatewaySessions(frozenset(peers), frozenset(serials))


class GatewaySessionProbe:
    """VICI and bundled-responder gateways; others are unknown. An HTTPS responder is verified
    against the system roots plus ``roots`` (ikepki's root: the push listener's usual issuer)."""

    def __init__(self, roots: Sequence[Any] = ()) -> None:
        self.roots = tuple(roots)

    def _verify(self) -> Any:
        import ssl

        from cryptography.hazmat.primitives.serialization import Encoding

        ctx = ssl.create_default_context()
        if self.roots:
            ctx.load_verify_locations(cadata="".join(r.public_bytes(Encoding.PEM).decode() for r in self.roots))
        return ctx

    def sessions(self, gateways: Iterable[Mapping[str, Any]], timeout: float = 1.0) -> dict[str, GatewaySessions]:
        out: dict[str, GatewaySessions] = {}
        for g in gateways:
            if not g.get("enabled", True):
                continue
            try:
                if g["kind"] == "vici":
                    out[g["name"]] = _vici_sessions(g["url"], timeout)
                elif g["kind"] == "responder":
                    out[g["name"]] = _responder_sessions(g["url"], timeout, self._verify())
            except Exception:  # noqa: S112  (best effort: a gateway that cannot tell is "unknown")
                continue
        return out

    def holders(self, targets: Sequence[CertificateInfo], sessions: Mapping[str, GatewaySessions]
                ) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for t in targets:
            keys = identity_keys(t.sans, t.subject)
            names = [n for n, s in sessions.items() if keys & s.peers or t.serial in s.serials]
            if names:
                out[t.serial_hex] = names
        return out


def probe(roots: Sequence[Any] = ()) -> GatewaySessionProbe:
    """Entry point ``ikepki.live_sessions: push``."""
    return GatewaySessionProbe(roots)
