"""Debian's lego (Go, independent) against ikepki: http-01 run and renew, tls-alpn-01 (RFC 8737)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from acme_helpers import DNS_PORT, AcmeServer, Eab, require_binary, verify_certificate

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


def test_lego_dns01_via_challtestsrv(acme: AcmeServer, tmp_path: Path) -> None:
    """dns-01 (RFC 8555 §8.4): lego's exec provider writes the TXT record into pebble-challtestsrv,
    which is the resolver ikepki is configured with."""
    from acme_helpers import free_port

    mgmt = free_port()
    srv = subprocess.Popen([require_binary("pebble-challtestsrv"), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                            "-dns01", f"127.0.0.1:{DNS_PORT}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                            "-management", f"127.0.0.1:{mgmt}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hook = tmp_path / "dns-hook.sh"
    hook.write_text("#!/bin/sh\n"
                    f'case "$1" in present) curl -sf -d "{{\\"host\\":\\"$2\\",\\"value\\":\\"$3\\"}}" '
                    f"http://127.0.0.1:{mgmt}/set-txt;;\n"
                    f'cleanup) curl -sf -d "{{\\"host\\":\\"$2\\"}}" http://127.0.0.1:{mgmt}/clear-txt;; esac\n')
    hook.chmod(0o755)
    try:
        import time

        import httpx
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{mgmt}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        eab = acme.eab("machine", "*.lego.test")
        env_path = os.environ.get("PATH", "")
        os.environ["EXEC_PATH"] = str(hook)
        try:
            lego(acme, tmp_path / "lego", eab, "dns.lego.test", "--dns", "exec", "--dns.resolvers",
                 f"127.0.0.1:{DNS_PORT}", "--dns.disable-cp", "run")
        finally:
            os.environ.pop("EXEC_PATH", None)
            os.environ["PATH"] = env_path
    finally:
        srv.terminate()
        srv.wait(5)
    crt = tmp_path / "lego" / "certificates" / "dns.lego.test.crt"
    verify_certificate(crt.read_bytes(), acme, tmp_path, {"dns.lego.test"})
