"""Debian's lego (Go, independent) against ikepki: http-01 run and renew, tls-alpn-01 (RFC 8737)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from acme_helpers import AcmeServer, Eab, require_binary, verify_certificate

pytestmark = pytest.mark.interop


def lego(acme: AcmeServer, path: Path, eab: Eab, domain: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [require_binary("lego"), "--server", acme.directory, "--email", "lego@example.test", "--accept-tos",
           "--key-type", "ec256", "--domains", domain, "--eab", "--kid", eab.kid, "--hmac", eab.hmac_key,
           "--path", str(path), *args]
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(acme.root_pem)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_lego_http01_run_and_renew(acme: AcmeServer, tmp_path: Path) -> None:
    eab = acme.eab("machine", "*.lego.test")
    http = ("--http", "--http.port", f"127.0.0.1:{acme.http01_port}")
    lego(acme, tmp_path / "lego", eab, "h1.lego.test", *http, "run")
    crt = tmp_path / "lego" / "certificates" / "h1.lego.test.crt"
    first = verify_certificate(crt.read_bytes(), acme, tmp_path, {"h1.lego.test"})
    lego(acme, tmp_path / "lego", eab, "h1.lego.test", *http, "renew", "--days", "9999", "--no-random-sleep")
    renewed = verify_certificate(crt.read_bytes(), acme, tmp_path, {"h1.lego.test"})
    assert renewed.serial_number != first.serial_number


def test_lego_tls_alpn01(acme: AcmeServer, tmp_path: Path) -> None:
    eab = acme.eab("machine", "*.lego.test")
    lego(acme, tmp_path / "lego", eab, "alpn.lego.test", "--tls", "--tls.port", f"127.0.0.1:{acme.tlsalpn_port}",
         "run")
    crt = tmp_path / "lego" / "certificates" / "alpn.lego.test.crt"
    verify_certificate(crt.read_bytes(), acme, tmp_path, {"alpn.lego.test"})
