"""Shared fixtures for the HA tests: one throwaway PostgreSQL cluster per session and one CA
deployment initialised against it once (`ikepki init` with IKEPKI_DATABASE_URL). Each module
clones that deployment: the database with ``CREATE DATABASE … TEMPLATE`` (schema, service
certificates, admin token hash), the directory with a copy whose SoftHSM token file is the
same key material. Every clone is an independent deployment of the same CA.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import run_ikepki
from tests.ha.deployments import BASE_DB, HaBase, write_config
from tests.postgres import PgCluster, pg_cluster


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def ha_base(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> HaBase:
    """`ikepki init` once against PostgreSQL; the database is then only used as a template."""
    url = pg.createdb(BASE_DB)
    directory = tmp_path_factory.mktemp("ha-base") / "ikepki"
    directory.mkdir()
    write_config(directory, url)
    run_ikepki("init", directory=directory, env={"IKEPKI_DATABASE_URL": url}, timeout=300)
    return HaBase(pg, directory)
