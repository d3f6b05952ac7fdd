"""Challenge validators, keyed by challenge type (RFC 8555 §8; RFC 8737 tls-alpn-01).

Plug-in interface (e.g. ``device-attest-01`` from ``enrollment.attestation``)::

    class MyValidator:
        type = "device-attest-01"
        identifier_types = frozenset({"permanent-identifier"})

        def applies(self, authz: Authz) -> bool: ...          # offer this challenge for the authz?
        def validate(self, challenge: Challenge, authz: Authz, account: Account,
                     payload: dict) -> ValidationResult: ...   # blocking is fine: runs in a worker thread

``payload`` is the JSON object the client POSTed to the challenge URL (``{}`` for http-01,
``{"attObj": …}`` for device-attest-01). Return ``ValidationResult.success(evidence={...})``
or ``ValidationResult.failure("incorrectResponse", "why")``; ``evidence`` is stored on the
authorization and passed to issuance at finalize (keys ``device_id``, ``ek_fingerprint``; with
``attested_spki`` — base64url SPKI — the CSR key must be that key, RFC 8555 finalize checks it).
Register with ``ChallengeRegistry.register(validator)``; ``enrollment.acme.routes`` also calls
the callables of entry-point group ``ikepki.acme_validators`` (``enrollment.attestation`` registers
``device-attest-01``).
A validator may raise nothing: every exception is turned into a ``serverInternal`` failure.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from enrollment.acme.jws import b64e
from enrollment.acme.model import Account, Authz, Challenge
from enrollment.acme.settings import AcmeSettings

OID_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 §3
MAX_HTTP01_BODY = 8192


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    problem_type: str = ""
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, evidence: dict[str, Any] | None = None) -> ValidationResult:
        return cls(True, evidence=evidence or {})

    @classmethod
    def failure(cls, problem_type: str, detail: str) -> ValidationResult:
        return cls(False, problem_type, detail)


class ChallengeValidator(Protocol):
    type: str
    identifier_types: frozenset[str]

    def applies(self, authz: Authz) -> bool: ...

    def validate(self, challenge: Challenge, authz: Authz, account: Account,
                 payload: dict[str, Any]) -> ValidationResult: ...


def key_authorization(token: str, account: Account) -> str:
    """RFC 8555 §8.1: token || '.' || base64url(JWK thumbprint)."""
    return f"{token}.{account.thumbprint}"


class ChallengeRegistry:
    def __init__(self) -> None:
        self._validators: dict[str, ChallengeValidator] = {}

    def register(self, validator: ChallengeValidator) -> None:
        self._validators[validator.type] = validator

    def get(self, type_: str) -> ChallengeValidator | None:
        return self._validators.get(type_)

    def types_for(self, authz: Authz) -> list[str]:
        return [t for t, v in self._validators.items()
                if authz.identifier.type in v.identifier_types and v.applies(authz)]

    @property
    def identifier_types(self) -> set[str]:
        return {t for v in self._validators.values() for t in v.identifier_types}


def _address(settings: AcmeSettings, authz: Authz) -> str:
    if authz.identifier.type == "ip":
        return authz.identifier.value
    mapped = settings.mapped_address(authz.identifier.value)
    if mapped:
        return mapped
    return str(socket.getaddrinfo(authz.identifier.value, None, proto=socket.IPPROTO_TCP)[0][4][0])


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class Http01:
    """RFC 8555 §8.3: GET http://<identifier>:<port>/.well-known/acme-challenge/<token>."""

    type = "http-01"
    identifier_types = frozenset({"dns", "ip"})

    def __init__(self, settings: AcmeSettings) -> None:
        self.settings = settings
        # one client for all validations (thread safe); no keep-alive: every validation connects afresh.
        # Short connect timeout; reads bounded per read by the timeout and in total by the deadline below.
        timeout = httpx.Timeout(settings.validation_timeout,
                                connect=min(settings.validation_connect_timeout, settings.validation_timeout))
        self.http = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False,  # plain http:
                                 verify=False, limits=httpx.Limits(max_keepalive_connections=0))  # noqa: S501

    def applies(self, authz: Authz) -> bool:
        return not authz.wildcard

    def validate(self, challenge: Challenge, authz: Authz, account: Account,
                 payload: dict[str, Any]) -> ValidationResult:
        try:
            address = _address(self.settings, authz)
        except OSError as exc:
            return ValidationResult.failure("dns", f"cannot resolve {authz.identifier.value}: {exc.strerror or exc}")
        host = authz.identifier.value if authz.identifier.type == "dns" else _host(authz.identifier.value)
        url = f"http://{_host(address)}:{self.settings.http01_port}/.well-known/acme-challenge/{challenge.token}"
        deadline = time.monotonic() + self.settings.validation_timeout
        try:
            with self.http.stream("GET", url, headers={"Host": host, "User-Agent": "ikepki-acme-va"}) as resp:
                body = b""
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_HTTP01_BODY:
                        return ValidationResult.failure("unauthorized", "http-01 response too large")
                    if time.monotonic() > deadline:  # a trickling server: bounded in total, not per read
                        return ValidationResult.failure("connection", f"http-01: {url} answered too slowly")
                status = resp.status_code
        except httpx.HTTPError as exc:
            return ValidationResult.failure("connection", f"http-01: cannot fetch {url}: {type(exc).__name__}")
        if status != 200:
            return ValidationResult.failure("unauthorized", f"http-01: {url} answered HTTP {status}")
        expected = key_authorization(challenge.token, account)
        if body.decode("ascii", "replace").rstrip() != expected:
            return ValidationResult.failure("incorrectResponse", "http-01: key authorization does not match")
        return ValidationResult.success()


class Dns01:
    """RFC 8555 §8.4: TXT _acme-challenge.<domain> = base64url(SHA-256(key authorization))."""

    type = "dns-01"
    identifier_types = frozenset({"dns"})

    def __init__(self, settings: AcmeSettings) -> None:
        self.settings = settings

    def applies(self, authz: Authz) -> bool:
        return True

    def _resolver(self) -> Any:
        import dns.resolver

        servers = self.settings.resolvers()
        resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            resolver.port = servers[0][1]  # before nameservers: dnspython binds the port when they are set
            resolver.nameservers = [h for h, _ in servers]
        resolver.lifetime = self.settings.validation_timeout
        return resolver

    def validate(self, challenge: Challenge, authz: Authz, account: Account,
                 payload: dict[str, Any]) -> ValidationResult:
        import dns.exception
        import dns.resolver

        domain = authz.identifier.value.removeprefix("*.")
        expected = b64e(hashlib.sha256(key_authorization(challenge.token, account).encode()).digest())
        try:
            answer = self._resolver().resolve(f"_acme-challenge.{domain}", "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return ValidationResult.failure("dns", f"dns-01: _acme-challenge.{domain} does not exist")
        except dns.exception.DNSException as exc:
            return ValidationResult.failure("dns", f"dns-01: lookup failed: {type(exc).__name__}")
        values = [b"".join(r.strings).decode("ascii", "replace") for r in (answer.rrset or [])]
        if expected in values:
            return ValidationResult.success()
        return ValidationResult.failure("incorrectResponse", f"dns-01: no matching TXT record ({len(values)} found)")


class TlsAlpn01:
    """RFC 8737: TLS with ALPN acme-tls/1; self-signed cert with the identifier and acmeIdentifier."""

    type = "tls-alpn-01"
    identifier_types = frozenset({"dns", "ip"})

    def __init__(self, settings: AcmeSettings) -> None:
        self.settings = settings

    def applies(self, authz: Authz) -> bool:
        return not authz.wildcard

    def _fetch(self, address: str, sni: str) -> tuple[bytes | None, str | None]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["acme-tls/1"])
        connect = min(self.settings.validation_connect_timeout, self.settings.validation_timeout)
        with socket.create_connection((address, self.settings.tlsalpn01_port), timeout=connect) as sock:
            sock.settimeout(self.settings.validation_timeout)
            with ctx.wrap_socket(sock, server_hostname=sni) as tls:
                return tls.getpeercert(binary_form=True), tls.selected_alpn_protocol()

    def validate(self, challenge: Challenge, authz: Authz, account: Account,
                 payload: dict[str, Any]) -> ValidationResult:
        ident = authz.identifier
        sni = ident.value if ident.type == "dns" else ipaddress.ip_address(ident.value).reverse_pointer
        try:
            der, alpn = self._fetch(_address(self.settings, authz), sni)
        except (OSError, ssl.SSLError) as exc:
            return ValidationResult.failure("tls", f"tls-alpn-01: handshake failed: {type(exc).__name__}")
        if alpn != "acme-tls/1" or der is None:
            return ValidationResult.failure("tls", "tls-alpn-01: acme-tls/1 was not negotiated")
        return self._check_cert(der, challenge, authz, account)

    def _check_cert(self, der: bytes, challenge: Challenge, authz: Authz, account: Account) -> ValidationResult:
        try:
            cert = x509.load_der_x509_certificate(der)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ext = cert.extensions.get_extension_for_oid(OID_ACME_IDENTIFIER)
        except (ValueError, x509.ExtensionNotFound):
            return ValidationResult.failure("unauthorized", "tls-alpn-01: certificate lacks SAN or acmeIdentifier")
        ident = authz.identifier
        names = list(sans)
        want: x509.GeneralName = (x509.DNSName(ident.value) if ident.type == "dns"
                                  else x509.IPAddress(ipaddress.ip_address(ident.value)))
        if len(names) != 1 or names[0] != want:
            return ValidationResult.failure("unauthorized", "tls-alpn-01: SAN must be exactly the identifier")
        digest = hashlib.sha256(key_authorization(challenge.token, account).encode()).digest()
        value = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
        if not ext.critical or value != b"\x04\x20" + digest:
            return ValidationResult.failure("incorrectResponse", "tls-alpn-01: acmeIdentifier does not match")
        return ValidationResult.success()


def default_registry(settings: AcmeSettings) -> ChallengeRegistry:
    registry = ChallengeRegistry()
    for validator in (Http01(settings), Dns01(settings), TlsAlpn01(settings)):
        registry.register(validator)
    return registry
