"""Alembic migrations for every package: the CA core's branch plus one branch per protocol
package (``<package>/migrations/versions``), applied together with ``upgrade heads``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_HERE = Path(__file__).parent
_ROOT = _HERE.parent.parent  # the directory holding the ca, enrollment, ocsp packages


def version_locations() -> list[str]:
    locations = [str(_HERE / "migrations" / "versions")]
    for package in ("enrollment", "ocsp", "gateway", "response", "console"):
        for versions in sorted((_ROOT / package).glob("**/migrations/versions")):
            locations.append(str(versions))
    return locations


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.set_main_option("version_locations", " ".join(version_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(url), revision)


def current_heads(url: str) -> set[str]:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
