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


LOCK_FILE = ".migrate.lock"  # beside a SQLite database (ca.store.locks)


def upgrade(url: str, revision: str = "heads", lock_file: Path | None = None) -> None:
    """``alembic upgrade`` under the deployment-wide ``migrate`` lock (:mod:`ca.store.locks`): replicas
    starting together (the chart's migrate containers) apply the revisions once, one after the other
    (the later ones find nothing to do). ``lock_file``: the flock file for SQLite (default: beside the
    database file)."""
    from ca.store.locks import exclusive

    if lock_file is None:
        db_file = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
        lock_file = Path(db_file).with_name(LOCK_FILE) if db_file and db_file != ":memory:" else None
    if lock_file is None and not url.startswith("postgresql"):  # in-memory or another engine: nothing to share
        command.upgrade(alembic_config(url), revision)
        return
    with exclusive(url, lock_file or Path(LOCK_FILE), "migrate"):
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
