"""Assemble a running responder: UDP endpoints, HTTP push/control listeners, signals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ca.identity import parse_identity
from ca.service.log_limit import rate_limit_loggers
from gateway.events import EventLog
from gateway.ikev2.auth import PrivateKey
from gateway.ikev2.crypto import SUPPORTED_GROUPS
from gateway.ikev2.proposals import Preferences
from gateway.policy import Policy
from gateway.push import ControlApi, PushLimits, serve_tcp, serve_unix
from gateway.radius import config as radius_config
from gateway.radius.dae import serve_dae
from gateway.responder import Responder, ResponderConfig
from gateway.revocation import OcspMode
from gateway.transport import IkeEndpoint, open_endpoint


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``ikepki responder serve`` accepts."""

    listen: str
    cert: Path
    key: str  # PEM file path or RFC 7512 PKCS#11 URI
    ca_bundle: Path
    nat_port: int | None = None
    policy: Path | None = None
    push_listen: str | None = None
    push_tls_cert: Path | None = None
    push_tls_key: Path | None = None
    push_insecure_http: bool = False  # --push-listen without TLS: only when asked for explicitly
    push_max_connections: int = 64
    push_timeout: float = 10.0
    control: Path | None = None
    ocsp: OcspMode = OcspMode.RELAXED
    event_log: Path | None = None
    local_id: str | None = None
    dh_groups: tuple[int, ...] = ()
    cookie_threshold: int = 64
    half_open_timeout: float = 30.0
    fragment_size: int = 1280
    radius: Path | None = None  # EAP/RADIUS configuration (gateway.radius.config)


def _load_key(ref: str) -> PrivateKey:
    """A PEM key file, or a key on a PKCS#11 token named by an RFC 7512 URI (``pkcs11:token=…;
    object=…?module-path=…&pin-source=file:…``; the PIN only by reference). The gateway's own key
    on its own token — never the CA's: this process opens no CA deployment."""
    if ref.startswith("pkcs11:"):
        return _pkcs11_key(ref)
    key = load_pem_private_key(Path(ref).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("unsupported private key type")
    return key


def _pkcs11_key(ref: str) -> PrivateKey:
    from ca.errors import PKIError
    from ca.keys.pin import resolve_pin
    from ca.keys.pkcs11 import DEFAULT_MODULE, open_token
    from ca.keys.uri import Pkcs11UriError, parse

    try:
        uri = parse(ref)
        if not uri.token or not uri.object:
            raise ConfigError("the PKCS#11 URI needs token= and object=")
        pin = resolve_pin(uri.pin_source or "env:IKEPKI_RESPONDER_PIN")
        key = open_token(uri.module_path or DEFAULT_MODULE, uri.token, pin).signing_key(uri.object).key
    except (PKIError, Pkcs11UriError) as exc:
        raise ConfigError(f"--key {uri_for_log(ref)}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError("unsupported PKCS#11 key type")
    return key


def uri_for_log(ref: str) -> str:
    """The URI without any pin-value (RFC 7512 §2.3 allows one; it must not be echoed)."""
    from ca.keys.uri import Pkcs11UriError, parse

    try:
        return parse(ref).without_secrets()
    except Pkcs11UriError:
        return "pkcs11:…"


class ConfigError(ValueError):
    """The responder cannot start with these files."""


def check_push_options(o: ServeOptions) -> None:
    """The push listener is HTTPS unless plain HTTP is asked for by name (--push-insecure-http)."""
    if not o.push_listen:
        if o.push_tls_cert or o.push_insecure_http:
            raise ConfigError("--push-tls-cert/--push-insecure-http need --push-listen")
        return
    if o.push_tls_cert and o.push_insecure_http:
        raise ConfigError("--push-tls-cert and --push-insecure-http exclude each other")
    if o.push_tls_key and not o.push_tls_cert:
        raise ConfigError("--push-tls-key needs --push-tls-cert")
    if not o.push_tls_cert and not o.push_insecure_http:
        raise ConfigError("--push-listen serves revocation pushes over HTTPS: give --push-tls-cert (PEM certificate "
                          "+ chain for this host's name or IP, e.g. ikepki issue --profile gateway) and "
                          "--push-tls-key, or --push-insecure-http to serve plain HTTP")


def build_config(o: ServeOptions) -> ResponderConfig:
    chain = tuple(x509.load_pem_x509_certificates(o.cert.read_bytes()))
    roots = tuple(x509.load_pem_x509_certificates(o.ca_bundle.read_bytes()))
    key = _load_key(o.key)
    if key.public_key() != chain[0].public_key():
        raise ConfigError(f"{uri_for_log(o.key) if o.key.startswith('pkcs11:') else o.key} is not the key of the "
                          f"first certificate in {o.cert}")
    unknown = [g for g in o.dh_groups if g not in SUPPORTED_GROUPS]
    if unknown:
        raise ConfigError(f"unsupported DH groups {unknown}; choose from {list(map(int, SUPPORTED_GROUPS))}")
    prefs = Preferences(dh=o.dh_groups) if o.dh_groups else Preferences()
    eap = radius_config.load(o.radius)[0] if o.radius else None
    return ResponderConfig(
        cert_chain=chain, key=key, roots=roots,
        policy=Policy.load(o.policy) if o.policy else None, ocsp_mode=o.ocsp, prefs=prefs,
        local_id=parse_identity(o.local_id) if o.local_id else None, listen_host=split_hostport(o.listen)[0],
        half_open_timeout=o.half_open_timeout, cookie_threshold=o.cookie_threshold, fragment_size=o.fragment_size,
        eap=eap)


class Gateway:
    """A responder bound to its sockets."""

    def __init__(self, opts: ServeOptions) -> None:
        check_push_options(opts)
        self.opts = opts
        self.endpoints: dict[int, IkeEndpoint] = {}
        self.log = EventLog(opts.event_log)
        self.responder = Responder(build_config(opts), self._send, self.log)
        self.api = ControlApi(self.responder)
        self.servers: list[asyncio.Server] = []
        self.dae: asyncio.DatagramTransport | None = None

    def _send(self, data: bytes, peer: tuple[str, int], port: int) -> None:
        ep = self.endpoints.get(port)
        if ep is not None:
            ep.send(data, peer)

    async def start(self) -> None:
        host, port = split_hostport(self.opts.listen)
        for p in (port, self.opts.nat_port):
            if p:
                self.endpoints[p] = await open_endpoint(host, p, self.responder.receive)
        if self.opts.push_listen:
            rate_limit_loggers("asyncio")  # e.g. EMFILE on accept: a few lines, not one per attempt
            host, port = split_hostport(self.opts.push_listen)
            tls = self._push_tls()
            limits = PushLimits(self.opts.push_max_connections, self.opts.push_timeout)
            self.servers.append(await serve_tcp(self.api, host, port, tls, limits))
            if tls is None:
                warning = (f"WARNING: the push listener {self.opts.push_listen} is PLAIN HTTP "
                           "(--push-insecure-http): revocation events are signed but readable by anyone on the path; "
                           "give --push-tls-cert/--push-tls-key for HTTPS")
                print(warning, file=sys.stderr, flush=True)
                self.log.emit("push_listener_insecure", push_listen=self.opts.push_listen, warning=warning)
        if self.opts.control:
            await self._start_control(self.opts.control)
        dae = radius_config.load(self.opts.radius)[1] if self.opts.radius else None
        if dae is not None:
            self.dae = await serve_dae(dae, lambda u, s, ip: len(self.responder.disconnect(u, s, ip)),
                                       self.log.emit, self.responder.clock)
        self.log.emit("responder_started", listen=self.opts.listen, nat_port=self.opts.nat_port,
                      push_listen=self.opts.push_listen, push_tls=bool(self.opts.push_tls_cert),
                      identity=str(self.responder.identity))

    def _push_tls(self) -> ssl.SSLContext | None:
        if not self.opts.push_tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.opts.push_tls_cert, self.opts.push_tls_key)
        return ctx

    def reload_policy(self) -> None:
        """SIGHUP: re-read the policy file; live SAs keep the rule they were granted."""
        if not self.opts.policy:
            return
        try:
            policy = Policy.load(self.opts.policy)
        except (OSError, ValueError) as exc:
            self.log.emit("policy_reload_failed", path=str(self.opts.policy), error=str(exc))
            return
        self.responder.cfg = dataclasses.replace(self.responder.cfg, policy=policy)
        self.log.emit("policy_reloaded", path=str(self.opts.policy), rules=[r.name for r in policy.rules])

    async def _start_control(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            self.servers.append(await serve_unix(self.api, str(path)))
        except OSError as exc:
            self.log.emit("control_socket_unavailable", path=str(path), error=str(exc))

    async def stop(self) -> None:
        """Delete live IKE SAs (RFC 7296 §1.4.1) for up to 1.5 s, then close the sockets."""
        r = self.responder
        deletes = [r.delete_ike_sa(sa, "responder shutdown") for sa in r.established()]
        if deletes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*deletes, return_exceptions=True), 1.5)
        for ep in self.endpoints.values():
            if ep.transport:
                ep.transport.close()
        for s in self.servers:
            s.close()
        if self.dae is not None:
            self.dae.close()
        self.log.emit("responder_stopped")


async def run(opts: ServeOptions) -> None:
    gw = Gateway(opts)
    await gw.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gw.reload_policy)
    await stop.wait()
    await gw.stop()
