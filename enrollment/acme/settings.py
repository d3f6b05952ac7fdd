"""ACME settings: section ``acme:`` of ikepki.yaml, overridable by ``IKEPKI_ACME_*`` variables."""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase

from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings
from ca.errors import ErrorKind, PKIError


class AcmeSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_ACME_")

    base_url: str | None = None  # default: https://<Host header>/acme
    external_account_required: bool = True  # RFC 8555 §7.3.4
    terms_of_service: str = "https://ikepki.invalid/acme/terms"
    website: str | None = None
    default_profile: str = "machine"
    profiles: list[str] = ["machine", "gateway", "user"]
    # challenge validation (RFC 8555 §8.3, §8.4; RFC 8737)
    http01_port: int = 80
    tlsalpn01_port: int = 443
    validation_hosts: str = ""  # "*.test=127.0.0.1,gw.example=10.0.0.1": identifier -> address, no DNS
    dns_resolver: str = ""  # "127.0.0.1:8053" (comma-separated); default: system resolver
    validation_timeout: float = 10.0  # whole validation of one challenge (http-01: connect + read)
    validation_connect_timeout: float = 3.0  # TCP connect (http-01, tls-alpn-01)
    validation_workers: int = 8
    validation_per_account: int = 2  # validations of one account running at once
    validation_queue_per_account: int = 16  # waiting per account; more -> rateLimited (429)
    validation_queue_max: int = 1024  # waiting in total
    # lifetimes
    nonce_lifetime_seconds: int = 3600
    order_lifetime_seconds: int = 24 * 3600
    authz_lifetime_seconds: int = 24 * 3600
    # bounds
    max_body_bytes: int = 64 * 1024
    max_identifiers: int = 32
    # rate limits (0 disables): requests per window per account and per source address
    rate_limit_window_seconds: int = 60
    rate_limit_per_account: int = 600
    rate_limit_per_ip: int = 1200
    # RFC 9773 renewal information
    ari_retry_after_seconds: int = 6 * 3600

    def host_map(self) -> list[tuple[str, str]]:
        """Parsed ``validation_hosts``: (pattern, address) pairs, first match wins."""
        out: list[tuple[str, str]] = []
        for item in self.validation_hosts.split(","):
            item = item.strip()
            if not item:
                continue
            pattern, sep, address = item.partition("=")
            try:
                ipaddress.ip_address(address.strip())
            except ValueError:
                raise PKIError(ErrorKind.CONFIG, f"acme.validation_hosts: {item!r} is not PATTERN=IP") from None
            if not sep or not pattern.strip():
                raise PKIError(ErrorKind.CONFIG, f"acme.validation_hosts: {item!r} is not PATTERN=IP")
            out.append((pattern.strip().lower(), address.strip()))
        return out

    def mapped_address(self, name: str) -> str | None:
        for pattern, address in self.host_map():
            if fnmatchcase(name.lower(), pattern):
                return address
        return None

    def resolvers(self) -> list[tuple[str, int]]:
        out = []
        for item in self.dns_resolver.split(","):
            item = item.strip()
            if item:
                host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "53")
                out.append((host, int(port or 53)))
        return out
