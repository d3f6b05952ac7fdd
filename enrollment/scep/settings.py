"""SCEP settings (section ``scep:`` of ikepki.yaml, environment ``IKEPKI_SCEP_…``).

Example::

    scep:
      default_profile: machine          # served at /scep; /scep/<profile> serves another profile
      allow_single_des: false           # micromdm scepclient only speaks DES-CBC + SHA-1
      next_ca_certs: null               # PEM file of a staged rollover (enables GetNextCACert)
      profiles:
        machine:
          challenge_password: s3cr3t    # static challenge (optional); one-time challenges always work
          manual_approval: false        # answer PENDING until `ikepki scep approve`
          webhook_url: null             # dynamic validation: POST CSR details, 2xx allows
          webhook_timeout: 5
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings

MAX_BODY_BYTES = 256 * 1024


class ScepProfileSettings(BaseModel):
    """How requests for one certificate profile are authorised."""

    model_config = ConfigDict(extra="forbid")

    challenge_password: SecretStr | None = None
    manual_approval: bool = False
    webhook_url: str | None = None
    webhook_timeout: float = Field(default=5.0, gt=0, le=60)
    san_from_cn: bool = True  # a CSR without SANs gets its CN as DNS (machine/gateway) or email (user) SAN


class ScepSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_SCEP_")

    default_profile: str = "machine"
    allow_single_des: bool = False  # DES-CBC and SHA-1 message digests (micromdm scepclient); off by default
    max_body_bytes: int = Field(default=64 * 1024, ge=4096, le=MAX_BODY_BYTES)
    clock_skew_seconds: int = Field(default=3600, ge=60)
    next_ca_certs: str | None = None
    include_root: bool = True  # GetCACert: RA, RSA issuing CA and the (EC) root; false or CA-IDENT "rsa-only": no root
    challenge_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    profiles: dict[str, ScepProfileSettings] = {}

    def profile(self, name: str) -> ScepProfileSettings:
        return self.profiles.get(name) or ScepProfileSettings()
