"""A throwaway PostgreSQL cluster (initdb/pg_ctl in a temp dir, loopback TCP, trust auth).

initdb refuses to run as root, so as root the cluster runs as the ``postgres`` system user
(created by Debian's postgresql package, which `make setup` installs)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} not found: install postgresql (make setup)")
    return path


@dataclass
class PgCluster:
    datadir: Path
    port: int
    user: str

    def url(self, db: str = "ikepki") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{db}"

    def createdb(self, name: str) -> str:
        _run(self, [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres",
                    "-c", f'CREATE DATABASE "{name}"'])
        return self.url(name)


def _run(cluster: PgCluster | None, cmd: list[str], user: str | None = None) -> None:
    if os.geteuid() == 0 and user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """Start a cluster in its own directory under /tmp (pytest's tmp dirs are 0700 root, which
    the postgres user cannot enter); stop it and delete the directory afterwards."""
    import tempfile

    run_as = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="ikepki-pg-"))
    datadir = base / "pgdata"
    datadir.mkdir(parents=True)
    if run_as:
        pw = pwd.getpwnam(run_as)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
    user = run_as or pwd.getpwuid(os.geteuid()).pw_name
    port = free_port()
    _run(None, [_pg_bin("initdb"), "-D", str(datadir), "-A", "trust", "-U", user, "--no-sync", "-E", "UTF8"],
         user=run_as)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {datadir} -c fsync=off -c max_connections=200"
    _run(None, [_pg_bin("pg_ctl"), "-D", str(datadir), "-o", opts, "-w", "-l", str(datadir / "log"), "start"],
         user=run_as)
    cluster = PgCluster(datadir, port, user)
    try:
        cluster.createdb("ikepki")
        yield cluster
    finally:
        subprocess.run((["runuser", "-u", run_as, "--"] if run_as else []) +
                       [_pg_bin("pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
