"""The CA core on PostgreSQL: migrations from empty, issuance from two processes, revocation
with its outbox rows, all on a real throwaway cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import run_ikepki
from tests.core.test_concurrency import WORKER
from tests.postgres import PgCluster, pg_cluster


@pytest.fixture(scope="module")
def pg():  # type: ignore[no-untyped-def]
    with pg_cluster() as cluster:
        yield cluster


def test_init_and_issue_on_postgres_from_two_processes(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.createdb("core_two_procs")
    directory = tmp_path / "dep"
    directory.mkdir()
    (directory / "ikepki.yaml").write_text(f"database_url: {url}\n")
    env = {"IKEPKI_DATABASE_URL": url}
    run_ikepki("init", directory=directory, env=env)
    run_ikepki("db", "upgrade", directory=directory, env=env)  # idempotent on an up-to-date schema
    child_env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(directory), tag, "200"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=child_env) for tag in ("pa", "pb")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    serials = [s for out, _ in outs for s in out.split()]
    assert len(set(serials)) == 400
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = {r[0] for r in conn.execute(text("select serial from certificates where channel = 'load'"))}
    assert stored == set(serials)
    revoke = run_ikepki("revoke", serials[0], serials[1], "--reason", "keyCompromise", "--yes", "--json",
                        directory=directory)
    assert '"dry_run": false' in revoke.stdout
    with engine.connect() as conn:
        statuses = {r[0]: r[1] for r in conn.execute(text(
            "select serial, status from certificates where serial in (:a, :b)"), {"a": serials[0], "b": serials[1]})}
        outbox = conn.execute(text("select count(*) from outbox_events where serial in (:a, :b)"),
                              {"a": serials[0], "b": serials[1]}).scalar_one()
    assert statuses == {serials[0]: "revoked", serials[1]: "revoked"} and outbox == 2
    engine.dispose()
