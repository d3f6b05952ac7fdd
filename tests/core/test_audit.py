"""The audit log's hash chain: intact verifies; an edited, removed or reordered line is named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ca.audit import AuditLog, verify
from tests.conftest import run_ikepki
from tests.core.csr_factory import SANS_FOR_PROFILE, make_csr, make_key


def _log(path: Path, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append(datetime(2026, 1, 1, tzinfo=UTC), "tester", "issue", "test", serial=format(i + 1000, "x"))


def test_chain_verifies_and_edit_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _log(path, 5)
    assert verify(path).ok
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    record["serial"] = "deadbeef"
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    result = verify(path)
    assert not result.ok and result.bad_line == 3


def test_removed_and_reordered_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _log(path, 5)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert verify(path).bad_line == 2
    path.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    assert verify(path).bad_line == 2


def test_cli_audit_verify(fresh_dir: Path, tmp_path: Path) -> None:
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["gateway"]))
    run_ikepki("issue", "--csr", str(csr), "--profile", "gateway", directory=fresh_dir)
    ok = run_ikepki("audit", "verify", "--json", directory=fresh_dir)
    assert json.loads(ok.stdout)["ok"] is True
    log = fresh_dir / "audit.log"
    lines = log.read_text().splitlines()
    assert any('"action":"issue"' in ln for ln in lines)
    target = next(i for i, ln in enumerate(lines) if '"action":"issue"' in ln and '"channel":"cli"' in ln)
    lines[target] = lines[target].replace('"profile":"gateway"', '"profile":"machine"')
    log.write_text("\n".join(lines) + "\n")
    bad = run_ikepki("audit", "verify", directory=fresh_dir, check=False)
    assert bad.returncode == 1 and f"line {target + 1}:" in bad.stderr


def test_block_device_writes_its_audit_line_inside_the_transaction(deployment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An unwritable audit sink refuses the block and changes nothing (as for issuance and
    revocation): never a blocked device without its audit line."""
    import secrets

    from ca.errors import ErrorKind, PKIError
    from ca.model import Requester

    device = f"audit-order-{secrets.token_hex(3)}"
    audit = deployment.authority.audit
    good = audit.path
    audit.path = tmp_path  # a directory: os.open fails, as on a full or read-only disk
    try:
        with pytest.raises(PKIError) as err:
            deployment.authority.block_device(device, Requester("test", "audit-order"), "test")
        assert err.value.kind is ErrorKind.UNAVAILABLE
    finally:
        audit.path = good
    assert not deployment.store.is_device_blocked(device, None)
    deployment.authority.block_device(device, Requester("test", "audit-order"), "test")
    assert deployment.store.is_device_blocked(device, None)
    assert f'"device":"{device}"' in good.read_text()


def test_cli_audit_lines_name_the_user_one_way(fresh_dir: Path) -> None:
    """``ikepki init`` and ``ikepki admin token`` write their audit lines (file and store) with the one
    CLI principal format ``<login>@cli`` on channel ``cli``, never the token value."""
    import sqlite3

    proc = run_ikepki("admin", "token", "--name", "ops-viewer", "--role", "viewer", "--json", directory=fresh_dir,
                      env={"LOGNAME": "alice", "USER": "alice"})
    token = json.loads(proc.stdout)["token"]
    lines = [json.loads(line) for line in (fresh_dir / "audit.log").read_text().splitlines()]
    (init,) = [a for a in lines if a["action"] == "init"]
    assert init["channel"] == "cli" and init["actor"].endswith("@cli"), init
    (created,) = [a for a in lines if a["action"] == "admin-token-create"]
    assert (created["actor"], created["channel"], created["token"], created["role"]) == \
        ("alice@cli", "cli", "ops-viewer", "viewer"), created
    assert token not in (fresh_dir / "audit.log").read_text()
    with sqlite3.connect(fresh_dir / "ikepki.db") as db:
        rows = db.execute("SELECT actor, channel, detail FROM audit_events WHERE action = 'admin-token-create'")
        ((actor, channel, detail),) = rows.fetchall()
    assert (actor, channel, json.loads(detail)) == ("alice@cli", "cli", {"token": "ops-viewer", "role": "viewer"})
    assert verify(fresh_dir / "audit.log").ok, verify(fresh_dir / "audit.log")
