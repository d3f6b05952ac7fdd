"""`ikepki serve` refuses a bad setting found while its workers load the protocol apps with the
same one line and exit status as a single process does, before listening (no worker traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_ikepki

BAD = {
    "invalid console.oidc": ("console:\n  oidc:\n    provider: corp\n    client_id: c\n",
                             "invalid setting console.oidc.group_roles: Field required"),
    "unknown provider": ("oidc:\n  providers:\n    corp:\n      issuer: http://127.0.0.1:9\n"
                         "      client_ids: [vpn]\nconsole:\n  oidc:\n    provider: crop\n    client_id: c\n"
                         "    group_roles: {admins: admin}\n",
                         "console.oidc.provider 'crop' is not an enabled provider of the oidc: section "
                         "(enabled: corp)"),
    "missing client secret": ("oidc:\n  providers:\n    corp:\n      issuer: http://127.0.0.1:9\n"
                              "      client_ids: [vpn]\nconsole:\n  oidc:\n    provider: corp\n    client_id: c\n"
                              "    group_roles: {admins: admin}\n    client_secret_file: no-such-secret.txt\n",
                              "console.oidc.client_secret_file 'no-such-secret.txt' is not a readable file"),
}


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_setting_is_one_line_and_exit_2(deployment_dir: Path, tmp_path: Path, case: str, workers: str) -> None:
    extra, line = BAD[case]
    config = tmp_path / "ikepki.yaml"
    config.write_text((deployment_dir / "ikepki.yaml").read_text() + "\nhttps_port: 0\nhttp_port: 0\n" + extra)
    proc = run_ikepki("serve", "--config", str(config), "--workers", workers, directory=deployment_dir,
                      check=False, timeout=120)
    assert proc.returncode == 2, proc
    assert [x for x in proc.stderr.splitlines() if x.strip()] == [f"error: {line}"], proc.stderr
