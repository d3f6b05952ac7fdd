"""The HA deployments: settings shared by every HA deployment, copying a deployment directory
for a second replica, cloning the session's base deployment (database by TEMPLATE + directory)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

from enrollment.est.auth import hash_password
from tests.postgres import PgCluster

BASE_DB = "ha_base"
EST_PIPELINE = "load"
EST_PASSWORD = "ha-load-pipeline-pw"


def base_config() -> dict[str, object]:
    """Settings shared by every HA deployment (short lease/poll times so takeovers are quick)."""
    return {
        "public_base_url": "http://127.0.0.1:8080",
        "est": {"default_label": "machine",
                "labels": {"machine": {"profile": "machine"},
                           "approval": {"profile": "machine", "manual_approval": True, "retry_after_seconds": 1}},
                "pipelines": {EST_PIPELINE: {"password_hash": hash_password(EST_PASSWORD, 1000),
                                             "labels": ["machine", "approval"]}}},
        "crl": {"debounce_seconds": 0.2, "poll_seconds": 0.25, "lease_seconds": 10},
        "ocsp": {"poll_seconds": 0.25},
        "push": {"lease_seconds": 10, "backoff_base_seconds": 0.2, "backoff_max_seconds": 1},
    }


def write_config(directory: Path, url: str, extra: dict[str, object] | None = None) -> None:
    data = {"database_url": url, **base_config(), **(extra or {})}
    (directory / "ikepki.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def copy_deployment(src: Path, dest: Path, url: str) -> Path:
    """A second directory with the same CA files and SoftHSM token (the copied token file holds
    the same keys), pointing at ``url``."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.log", "ikepki.db*"))
    conf = dest / "softhsm2.conf"
    conf.write_text(conf.read_text().replace(str(src / "tokens"), str(dest / "tokens")))
    write_config(dest, url)
    return dest


@dataclass
class HaBase:
    pg: PgCluster
    dir: Path

    def clone_db(self, name: str) -> str:
        engine = create_engine(self.pg.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{BASE_DB}"'))
        finally:
            engine.dispose()
        return self.pg.url(name)

    def clone(self, name: str, dest: Path) -> tuple[Path, str]:
        """A new deployment directory + database holding this CA (deployment ``name``)."""
        url = self.clone_db(name)
        return copy_deployment(self.dir, dest, url), url
