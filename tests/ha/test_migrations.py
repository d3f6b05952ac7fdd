"""Alembic on PostgreSQL: `ikepki db upgrade` applies every package's branch (all heads) from an
empty database and from the previous revision, the downgrades run, and the migrated schema has
every column the packages' SQLModel records use.

"Previous revision": the previous state of a database is either a core-only schema (ca_0001,
before the protocol packages' branches and the user mapping ca_0003 existed), a database with one
package branch removed (``<label>@base``; branches: acme, est, scep, ocsp, attestation, response,
console, oidc, posture), or one package branch one revision back (``<label>@-1``: scep_0002, the
challenge-password redaction, back to scep_0001); one step back of the core is ``base`` (it first
removes the branches that depend on ca_0001).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from ca.store import migrate
from tests.conftest import run_ikepki
from tests.postgres import PgCluster

LABELS = {"ca", "acme", "est", "scep", "ocsp", "attestation", "response", "console", "oidc", "posture"}
RECORD_MODULES = ("ca.store.records", "enrollment.acme.records", "enrollment.est.records", "enrollment.scep.records",
                  "ocsp.records", "enrollment.attestation.store", "response.records", "console.records",
                  "enrollment.oidc.records", "enrollment.posture.store")
CORE = {"ca_0001", "ca_0002", "ca_0003"}  # the core branch's revisions


def _script(url: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config(url))


def _heads(url: str) -> set[str]:
    return set(_script(url).get_heads())


def _all_revisions(url: str) -> set[str]:
    return {r.revision for r in _script(url).walk_revisions()}


def _applied(url: str) -> set[str]:
    """Every revision applied: alembic_version keeps only heads not implied by a depends_on."""
    current = tuple(migrate.current_heads(url))
    if not current:
        return set()
    return {r.revision for r in _script(url).revision_map.iterate_revisions(current, "base", inclusive=True,
                                                                           implicit_base=True)}


def _tables(url: str) -> dict[str, set[str]]:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}
    finally:
        engine.dispose()


def _db_upgrade(directory: Path, url: str) -> None:
    run_ikepki("db", "upgrade", directory=directory, env={"IKEPKI_DATABASE_URL": url})


def _model_tables() -> dict[str, set[str]]:
    for name in RECORD_MODULES:
        importlib.import_module(name)
    return {name: {c.name for c in table.columns} for name, table in SQLModel.metadata.tables.items()}


def test_upgrade_from_empty_applies_every_branch(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.createdb("mig_empty")
    heads = _heads(url)
    assert {h.split("_")[0] for h in heads} == LABELS, heads
    _db_upgrade(tmp_path, url)
    assert _applied(url) == _all_revisions(url)
    migrate.upgrade(url)  # idempotent
    assert _applied(url) == _all_revisions(url)
    tables = _tables(url)
    missing = {t: sorted(cols - tables.get(t, set())) for t, cols in _model_tables().items()
               if not cols <= tables.get(t, set())}
    assert not missing, f"records without a migrated table/column on PostgreSQL: {missing}"


def test_upgrade_from_each_package_branch_one_step_back(pg: PgCluster) -> None:
    url = pg.createdb("mig_back")
    migrate.upgrade(url)
    before = _tables(url)
    cfg = migrate.alembic_config(url)
    command.downgrade(cfg, "scep@-1")  # a data-only revision: the schema stays
    assert "scep_0001" in _applied(url) and _tables(url) == before
    migrate.upgrade(url)
    for label in sorted(LABELS - {"ca"}):
        command.downgrade(cfg, f"{label}@base")
        applied = _applied(url)
        assert not any(h.startswith(label) for h in applied) and applied >= CORE, (label, applied)
        assert set(_tables(url)) < set(before), label
        migrate.upgrade(url)
        assert _tables(url) == before, label
    for label in sorted(LABELS - {"ca"}):  # all package branches back at once, then the CLI
        command.downgrade(cfg, f"{label}@base")
    assert _applied(url) == CORE
    migrate.upgrade(url)  # what `ikepki db upgrade` runs (the CLI is exercised by the other tests)
    assert _applied(url) == _all_revisions(url)
    assert _tables(url) == before


def test_upgrade_from_core_only_and_from_base_after_downgrade(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.createdb("mig_core")
    migrate.upgrade(url, "ca@head")  # a database from before the package branches existed
    assert _applied(url) == CORE
    engine = create_engine(url)
    try:
        with engine.begin() as conn:  # existing data survives the package upgrades
            conn.execute(text("insert into gateways (name, kind, url, enabled, created_at) "
                              "values ('old', 'webhook', 'http://old.invalid/', true, now())"))
        _db_upgrade(tmp_path, url)
        assert _applied(url) == _all_revisions(url)
        with engine.connect() as conn:
            assert conn.execute(text("select name from gateways")).scalars().all() == ["old"]
        engine.dispose()
        command.downgrade(migrate.alembic_config(url), "base")  # one step back of the core
        assert _applied(url) == set()
        assert set(_tables(url)) == {"alembic_version"}
        migrate.upgrade(url)
        assert _applied(url) == _all_revisions(url)
    finally:
        engine.dispose()
