"""Typed settings. Every package has its own model; all read ``DIR/ikepki.yaml`` (or
``--config``), and every setting can be overridden by an ``IKEPKI_…`` environment variable
(environment wins over the file). Invalid settings fail closed with one readable line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ca.errors import ErrorKind, PKIError

MAX_CONFIG_BYTES = 1024 * 1024
DEFAULT_DIR = Path("./var")


class IkepkiSettings(BaseSettings):
    """Base: environment variables take precedence over values from the config file."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


class ProfileLifetimes(IkepkiSettings):
    """``profiles.<name>``: lifetimes, and the subject attribute values a requester may ask for
    (``subject: {O: [Example]}``; nothing beyond authorized identifiers and grants by default)."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_PROFILE_UNUSED_")
    default_hours: float | None = None
    max_hours: float | None = None
    subject: dict[str, list[str]] | None = None


class CaSettings(IkepkiSettings):
    """Core settings (section: top level of ikepki.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="IKEPKI_")

    database_url: str | None = None  # default sqlite:///DIR/ikepki.db
    hsm_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    hsm_token_label: str = "ikepki"  # noqa: S105  (a label, not a secret)
    hsm_pin_file: str | None = None  # default DIR/hsm-pin
    hsm_pin_env: str | None = None  # name of an environment variable holding the PIN
    hsm_unhealthy_after_seconds: float = 120.0  # /healthz fails once the HSM has been unusable this long
    softhsm_conf: str | None = None  # default DIR/softhsm2.conf when it exists
    public_base_url: str = "http://127.0.0.1:8080"  # put into AIA/CDP of issued certs
    ocsp_base_url: str | None = None  # OCSP responder base if it runs elsewhere (default public_base_url)
    host: str = "127.0.0.1"
    https_port: int = 8443
    http_port: int = 8080
    workers: int = Field(0, ge=0, le=64)  # serving processes per replica; 0: one per available CPU core
    audit_log: str | None = None  # default DIR/audit.log
    admin_token_file: str | None = None  # default DIR/admin-token
    tls_min_version: str = "1.2"  # strongSwan pki's TLS stack stops at 1.2
    profiles: dict[str, ProfileLifetimes] = {}


S = TypeVar("S", bound=BaseSettings)


class ConfigSource:
    """The parsed config file, handing each package its section."""

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path

    @classmethod
    def load(cls, path: Path | None) -> ConfigSource:
        if path is None or not path.exists():
            return cls({}, path)
        try:
            raw = path.read_bytes()
            if len(raw) > MAX_CONFIG_BYTES:
                raise PKIError(ErrorKind.CONFIG, f"{path}: config file too large")
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise PKIError(ErrorKind.CONFIG, f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise PKIError(ErrorKind.CONFIG, f"{path}: top level must be a mapping")
        return cls(data, path)

    def section(self, name: str | None) -> dict[str, Any]:
        if name is None:
            return dict(self.data)
        value = self.data.get(name) or {}
        if not isinstance(value, dict):
            raise PKIError(ErrorKind.CONFIG, f"config section {name!r} must be a mapping")
        return value

    def settings(self, cls: type[S], section: str | None = None) -> S:
        """Build ``cls`` from the section, environment first; fail closed with one line."""
        try:
            return cls(**self.section(section))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            prefix = f"{section}." if section else ""
            raise PKIError(ErrorKind.CONFIG, f"invalid setting {prefix}{where}: {err['msg']}") from None
