"""EST settings: section ``est:`` of ikepki.yaml, environment ``IKEPKI_EST_…`` overrides.

Example::

    est:
      default_label: machine
      labels:
        machine: {profile: machine, auth: [client-cert, basic, enrollment-secret]}
        gateway: {profile: gateway, auth: [basic], manual_approval: true}
      pipelines:          # HTTP Basic per MDM pipeline; hash from `ikepki est hash-password`
        intune: {password_hash: "pbkdf2_sha256$…", labels: [machine, user]}
      ra_subjects: ["CN=mdm-ra,O=Example"]
      trusted_proxy_header: ssl-client-cert   # only behind an ingress that sets it
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from ca.config import IkepkiSettings

AuthMethod = Literal["client-cert", "basic", "enrollment-secret"]
ALL_AUTH: list[AuthMethod] = ["client-cert", "basic", "enrollment-secret"]


class LabelSettings(BaseModel):
    """One EST label (RFC 7030 §3.2.2 ``/.well-known/est/<label>/…``) mapped to a profile."""

    model_config = {"extra": "forbid"}
    profile: str
    auth: list[AuthMethod] = Field(default_factory=lambda: list(ALL_AUTH))
    manual_approval: bool = False  # 202 + Retry-After until `ikepki est approve ID`
    retry_after_seconds: int = Field(default=30, ge=1, le=86_400)
    lifetime_hours: float | None = None  # default: the profile's default lifetime


class PipelineSettings(BaseModel):
    """HTTP Basic credentials of one MDM pipeline (user name = the key in ``pipelines``)."""

    model_config = {"extra": "forbid"}
    password_hash: str  # pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>
    labels: list[str] = Field(default_factory=list)  # empty: every label
    registered_only: bool = False  # true: only for MDM-registered devices (like an RA)


def _default_labels() -> dict[str, LabelSettings]:
    return {name: LabelSettings(profile=name) for name in ("machine", "user", "gateway")}


class EstSettings(IkepkiSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="IKEPKI_EST_")

    enabled: bool = True
    default_label: str = "machine"  # used for /.well-known/est/<operation> without a label
    labels: dict[str, LabelSettings] = Field(default_factory=_default_labels)
    pipelines: dict[str, PipelineSettings] = Field(default_factory=dict)
    ra_subjects: list[str] = Field(default_factory=list)  # RFC 4514 subjects of RA certificates
    ra_ekus: list[str] = Field(default_factory=list)  # dotted EKU OIDs that mark an RA certificate
    trusted_proxy_header: str | None = None  # e.g. ssl-client-cert (ingress-nginx, URL-encoded PEM)
    max_body_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    registration_default_hours: float = Field(default=72, gt=0)
    claim_timeout_seconds: int = Field(default=300, ge=10)  # a claim without a certificate expires
    serverkeygen: bool = True
