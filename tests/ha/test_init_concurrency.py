"""Several replicas start ``ikepki init`` (the chart's init-ca container) and the schema migrations
(the migrate container) at the same moment against a fresh PostgreSQL database and volume: the
deployment-wide locks of :mod:`ca.store.locks` (PostgreSQL advisory locks) let exactly one make the
CA; the others wait and find it (``--if-missing``: success, nothing made).

The test holds the lock itself while it starts the processes and releases it only once PostgreSQL
shows every one of them waiting on it (``pg_locks``), so they really contend for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from sqlalchemy import create_engine, text

from ca.deployment import INIT_LOCK
from ca.store.locks import exclusive
from tests.conftest import IKEPKI
from tests.ha.deployments import write_config
from tests.ha.ha_helpers import wait_for
from tests.postgres import PgCluster

REPLICAS = 2


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _waiting_on_advisory_locks(url: str) -> int:
    return int(_query(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND "
                           "database = (SELECT oid FROM pg_database WHERE datname = current_database())")[0][0])


def _released_together(url: str, lock_file: Path, name: str, start: list[list[str]],
                       env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Start ``start`` while holding lock ``name``; release it when all of them wait on it."""
    with exclusive(url, lock_file, name):
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for cmd in start]
        try:
            wait_for(lambda: _waiting_on_advisory_locks(url) == len(procs) or any(p.poll() is not None
                                                                                    for p in procs),
                     f"{len(procs)} processes waiting on the {name} lock", timeout=120)
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        except BaseException:
            for p in procs:
                p.kill()
            raise
    done = []
    for cmd, p in zip(start, procs, strict=True):
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    return done


def test_concurrent_inits_make_one_ca_and_the_others_find_it(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.createdb(f"init_race_{os.getpid()}")
    directory = tmp_path / "ikepki"
    directory.mkdir()
    write_config(directory, url)
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"} | {"IKEPKI_DATABASE_URL": url}
    cmd = [IKEPKI, "init", "--dir", str(directory), "--if-missing", "--json"]
    done = _released_together(url, directory / INIT_LOCK, "init", [cmd] * REPLICAS, env)
    assert [p.returncode for p in done] == [0] * REPLICAS, [(p.stdout, p.stderr) for p in done]
    results = [json.loads(p.stdout) for p in done]
    makers = [r for r in results if not r["existing"]]
    assert len(makers) == 1, results  # one ceremony; every other replica found its deployment
    assert all(r["made"] == [] for r in results if r["existing"]), results

    # one CA: one root and one set of issuers on the volume, everything in the store issued by them
    issuers = {x509.load_pem_x509_certificate(p.read_bytes()).subject for p in (directory / "ca").glob("*.pem")}
    root = x509.load_pem_x509_certificate((directory / "root-ca.pem").read_bytes())
    certs = [x509.load_der_x509_certificate(bytes(row[0])) for row in _query(url, "SELECT der FROM certificates")]
    signed = [m["what"] for m in makers[0]["made"]
              if m["what"].startswith(("service certificate", "HTTPS server certificate"))]
    assert certs and len(certs) == len(signed), (len(certs), signed)
    assert all(c.issuer in issuers | {root.subject} for c in certs)
    assert _query(url, "SELECT name, role FROM admin_tokens") == [("admin", "admin")]
    audit = [json.loads(line) for line in (directory / "audit.log").read_text().splitlines()]
    assert [a["action"] for a in audit].count("init") == 1, audit

    # and a later start of any replica still finds it (the chart's init-ca on every pod restart)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert again.returncode == 0 and json.loads(again.stdout)["existing"] is True, again.stderr
    # without --if-missing an existing CA stays a conflict (exit 4), decided under the same lock
    plain = subprocess.run([IKEPKI, "init", "--dir", str(directory), "--json"], capture_output=True, text=True,
                           env=env, timeout=300, check=False)
    assert plain.returncode == 4 and "already holds a CA" in plain.stderr, (plain.returncode, plain.stderr)
    # --force replaces the CA on the volume, but never leaves the old one's records in a database of
    # its own beside the new CA's: refused (nothing wiped) until the database is a new, empty one
    forced = subprocess.run([IKEPKI, "init", "--dir", str(directory), "--force"], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert forced.returncode == 4 and "still holds" in forced.stderr, (forced.returncode, forced.stderr)
    assert x509.load_pem_x509_certificate((directory / "root-ca.pem").read_bytes()) == root
    empty = pg.createdb(f"init_forced_{os.getpid()}")
    write_config(directory, empty)
    forced = subprocess.run([IKEPKI, "init", "--dir", str(directory), "--force"], capture_output=True, text=True,
                            env=env | {"IKEPKI_DATABASE_URL": empty}, timeout=300, check=False)
    assert forced.returncode == 0, forced.stderr
    assert x509.load_pem_x509_certificate((directory / "root-ca.pem").read_bytes()) != root


_UPGRADE = "import sys; from ca.store import migrate; migrate.upgrade(sys.argv[1])"


def test_concurrent_migrations_apply_each_revision_once(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.createdb(f"migrate_race_{os.getpid()}")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    cmd = [sys.executable, "-c", _UPGRADE, url]
    done = _released_together(url, tmp_path / "unused.lock", "migrate", [cmd] * REPLICAS, env)
    assert [p.returncode for p in done] == [0] * REPLICAS, [p.stderr[-3000:] for p in done]
    from tests.ha.test_migrations import _all_revisions, _applied

    assert _applied(url) == _all_revisions(url)
