"""Configuration. ``ikepki.yaml`` section ``response:`` (env ``IKEPKI_RESPONSE_…``) points at the
hooks file (default ``DIR/response.yaml``): sources, rules and the global guard. The hooks file is
re-read when it changes; a broken new version is refused (logged, audited) and the previous one
stays in force. Secrets are references (``file:PATH`` or ``env:NAME``), never values.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings
from ca.errors import ErrorKind, PKIError
from ca.keys.pin import resolve_pin
from ca.model import RevocationReason
from response.formats import generic, keylime

log = logging.getLogger("ikepki.response")
MAX_FILE = 1024 * 1024
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ResponseSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_RESPONSE_")

    config_file: str = "response.yaml"  # relative to DIR
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limit(_Model):
    """At most this many certificates / devices changed within ``window_seconds``."""

    max_certificates: int = Field(default=50, ge=0)
    max_devices: int = Field(default=10, ge=0)
    window_seconds: int = Field(default=3600, ge=1, le=30 * 86400)


class SourceConfig(_Model):
    format: Literal["alertmanager", "keylime", "standard-webhooks"]
    bearer_token: str | None = None  # reference: file:PATH | env:NAME
    client_cert_subject: str | None = None  # RFC 4514 subject of a client certificate from the ikepki CA
    # ...issued under one of these profiles (a user certificate with that subject does not match)
    client_cert_profiles: tuple[str, ...] = Field(default=("machine",), min_length=1, max_length=16)
    secret: str | None = None  # standard-webhooks: reference to whsec_<base64>
    verifier_cert: str | None = None  # keylime: PEM certificate or public key (path)
    allow_unsigned: bool = False  # keylime without a verifier key (not recommended)
    tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    fingerprint_field: str = "fingerprint"  # standard-webhooks

    @model_validator(mode="after")
    def _authenticated(self) -> SourceConfig:
        if self.format == "alertmanager" and not (self.bearer_token or self.client_cert_subject):
            raise ValueError("an alertmanager source needs bearer_token or client_cert_subject")
        if self.format == "standard-webhooks" and not self.secret:
            raise ValueError("a standard-webhooks source needs secret (file:… or env:…)")
        if self.format == "keylime" and not (self.verifier_cert or self.allow_unsigned):
            raise ValueError("a keylime source needs verifier_cert (or allow_unsigned: true)")
        if self.allow_unsigned and self.format != "keylime":
            raise ValueError("allow_unsigned applies to keylime sources only")
        return self


class Target(_Model):
    """Which alert field names what: a device id, a TPM EK fingerprint, a serial (hex) or an
    identity (email, DNS name, IP); ``user`` is an identity given by an IdP user name."""

    kind: Literal["device", "ek", "serial", "identity", "user"]
    field: str = Field(min_length=1, max_length=256)


class RuleConfig(_Model):
    name: str = Field(pattern=NAME)
    sources: list[str] = []  # empty: every source
    match: dict[str, str] = {}  # field -> fnmatch pattern; all must match
    target: Target
    action: Literal["hold", "revoke", "block", "posture"]  # block: refuse re-enrollment only
    posture: Literal["quarantine", "refused"] = "quarantine"  # action posture: the device's new verdict
    reason: str | None = None  # revoke: RFC 5280 reason name
    block_device: bool = False  # hold/revoke: also refuse re-enrollment of the device
    release_on_resolve: bool = False  # hold: a resolved alert releases the holds it made
    dry_run: bool = False
    limit: Limit | None = None

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        if value is not None:
            reason = RevocationReason.parse(value)
            if reason in (RevocationReason.certificateHold, RevocationReason.removeFromCRL):
                raise ValueError("use action: hold for certificateHold; removeFromCRL is not a reason")
            return reason.name
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        if self.action == "revoke" and not self.reason:
            raise ValueError("action revoke needs a reason (e.g. keyCompromise)")
        if self.release_on_resolve and self.action != "hold":
            raise ValueError("release_on_resolve applies to action hold only")
        if self.action == "block" and self.target.kind not in ("device", "ek"):
            raise ValueError("action block needs a device or ek target")
        if self.action == "posture" and self.target.kind != "device":
            raise ValueError("action posture needs a device target")
        return self

    def matches(self, source: str, fields: dict[str, str] | Any) -> bool:
        if self.sources and source not in self.sources:
            return False
        return all(k in fields and fnmatch.fnmatchcase(fields[k], pattern) for k, pattern in self.match.items())


class HooksFile(_Model):
    sources: dict[str, SourceConfig] = {}
    rules: list[RuleConfig] = []
    guard: Limit = Limit()

    @model_validator(mode="after")
    def _names(self) -> HooksFile:
        import re

        for name in self.sources:
            if not re.match(NAME, name):
                raise ValueError(f"source name {name!r} must match {NAME}")
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        for rule in self.rules:
            unknown = set(rule.sources) - set(self.sources)
            if unknown:
                raise ValueError(f"rule {rule.name} names unknown sources {sorted(unknown)}")
        return self


@dataclass(frozen=True)
class Source:
    """A configured source with its secrets resolved (never logged)."""

    name: str
    config: SourceConfig
    bearer_sha256: bytes | None
    hmac_keys: tuple[bytes, ...]
    verifier_key: rsa.RSAPublicKey | None


@dataclass(frozen=True)
class Loaded:
    hooks: HooksFile
    sources: dict[str, Source]
    mtime_ns: int


def load(path: Path, base: Path) -> Loaded:
    """Parse, validate and resolve every reference; PKIError(CONFIG) with one line otherwise."""
    import hashlib

    try:
        stat = path.stat()
        if stat.st_size > MAX_FILE:
            raise PKIError(ErrorKind.CONFIG, f"{path}: too large")
        data = yaml.safe_load(path.read_bytes()) or {}
    except FileNotFoundError:
        return Loaded(HooksFile(), {}, 0)
    except yaml.YAMLError as exc:
        raise PKIError(ErrorKind.CONFIG, f"{path}: invalid YAML: {exc}") from None
    try:
        hooks = HooksFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PKIError(ErrorKind.CONFIG, f"{path}: {where}: {err['msg']}") from None
    sources: dict[str, Source] = {}
    for name, cfg in hooks.sources.items():
        bearer = hashlib.sha256(resolve_pin(cfg.bearer_token, base=base).reveal().encode()).digest() \
            if cfg.bearer_token else None
        keys: tuple[bytes, ...] = ()
        if cfg.secret:
            try:
                keys = tuple(generic.decode_secret(s) for s in resolve_pin(cfg.secret, base=base).reveal().split())
            except ValueError as exc:
                raise PKIError(ErrorKind.CONFIG, f"{path}: source {name}: {exc}") from None
        verifier = None
        if cfg.verifier_cert:
            cert_path = Path(cfg.verifier_cert) if os.path.isabs(cfg.verifier_cert) else base / cfg.verifier_cert
            try:
                verifier = keylime.load_verifier_key(cert_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise PKIError(ErrorKind.CONFIG, f"{path}: source {name}: verifier_cert: {exc}") from None
        sources[name] = Source(name, cfg, bearer, keys, verifier)
    return Loaded(hooks, sources, stat.st_mtime_ns)


class HooksConfig:
    """The current hooks file, re-read when its mtime changes (checked at most every 0.5 s)."""

    def __init__(self, path: Path, base: Path, on_reload_error: Any = None) -> None:
        self.path, self.base = path, base
        self._lock = threading.Lock()
        self._loaded = load(path, base)  # fail closed at start-up
        self._checked = 0.0
        self._on_error = on_reload_error

    def current(self) -> Loaded:
        import time

        now = time.monotonic()
        if now - self._checked < 0.5:
            return self._loaded
        with self._lock:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = 0
            if mtime != self._loaded.mtime_ns:
                try:
                    self._loaded = load(self.path, self.base)
                    log.info("hooks file %s reloaded", self.path)
                except PKIError as exc:
                    log.error("hooks file %s not reloaded, previous version stays: %s", self.path, exc.detail)
                    self._loaded = Loaded(self._loaded.hooks, self._loaded.sources, mtime)
                    if self._on_error:
                        self._on_error(exc.detail)
            return self._loaded

    def force_reload(self) -> Loaded:
        self._checked = 0.0
        return self.current()
