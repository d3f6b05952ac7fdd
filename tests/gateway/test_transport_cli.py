"""Non-ESP marker rules on real UDP sockets (strongSwan note §4) and the CLI with --config."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from gw_pki import build_pki, make_leaf
from gw_procs import ResponderProc, free_port

from gateway.ikev2.constants import NON_ESP_MARKER
from gateway.transport import open_endpoint, uses_marker


def test_marker_rule() -> None:
    assert uses_marker(4500, 4500) and uses_marker(15500, 25501)
    assert not uses_marker(500, 500) and not uses_marker(500, 4500) and not uses_marker(4500, 500)


def test_endpoint_strips_marker_drops_esp_and_replies_to_source() -> None:
    async def go() -> None:
        got: list[tuple[bytes, tuple[str, int], int]] = []

        async def handler(data: bytes, peer: tuple[str, int], port: int) -> None:
            got.append((data, peer, port))

        port = free_port()
        ep = await open_endpoint("127.0.0.1", port, handler)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as cl:
            cl.bind(("127.0.0.1", 0))
            cl.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_sendto(cl, NON_ESP_MARKER + b"IKE-message", ("127.0.0.1", port))
            await loop.sock_sendto(cl, b"\x11\x22\x33\x44ESP", ("127.0.0.1", port))  # ESP: dropped
            await loop.sock_sendto(cl, b"\xff", ("127.0.0.1", port))  # NAT keepalive: dropped
            await asyncio.sleep(0.1)
            assert got == [(b"IKE-message", cl.getsockname(), port)]
            ep.send(b"reply", got[0][1])
            data = await asyncio.wait_for(loop.sock_recv(cl, 100), 2)
            assert data == NON_ESP_MARKER + b"reply"
        assert ep.transport is not None
        ep.transport.close()
    asyncio.run(go())


def test_serve_from_config_file_and_sas_over_control_socket(tmp_path: Path) -> None:
    pki = build_pki()
    pki.write(tmp_path)
    (tmp_path / "r").mkdir()
    tls = make_leaf(pki.root, "push endpoint", ekus=(ExtendedKeyUsageOID.SERVER_AUTH,))
    tls_cert = (x509.CertificateBuilder().subject_name(tls.cert.subject).issuer_name(tls.cert.issuer)
                .public_key(tls.cert.public_key()).serial_number(tls.cert.serial_number)  # type: ignore[arg-type]
                .not_valid_before(tls.cert.not_valid_before_utc).not_valid_after(tls.cert.not_valid_after_utc)
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
                .sign(pki.root.key, hashes.SHA256()))  # type: ignore[arg-type]
    (tmp_path / "tls.pem").write_bytes(tls_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(tls.key_pem())
    ctx = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
    proc = ResponderProc(tmp_path / "r", free_port(), free_port(socket.SOCK_STREAM), [], scheme="https", verify=ctx)
    cfg = {"cert": str(tmp_path / "gw.pem"), "key": str(tmp_path / "gw.key"),
           "ca_bundle": str(tmp_path / "root.pem"), "ocsp": "off", "nat_port": free_port(),
           "push_tls_cert": str(tmp_path / "tls.pem"), "push_tls_key": str(tmp_path / "tls.key"),
           "policy": str(tmp_path / "policy.yaml")}
    (tmp_path / "policy.yaml").write_text("rules: [{name: first, match: {role: staff}, local_ts: [10.0.0.0/8]}]")
    (tmp_path / "responder.yaml").write_text(yaml.safe_dump(cfg))
    proc.args = ["--config", str(tmp_path / "responder.yaml")]
    proc.start()
    try:
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "sas", "--json", "--control", str(proc.control)],
                             capture_output=True, text=True, timeout=20, check=True)
        assert json.loads(out.stdout) == {"sas": []}
        over_tls = subprocess.run([sys.executable, "-m", "gateway.cli", "sas", "--json", "--url", proc.url,
                                   "--ca-bundle", str(tmp_path / "root.pem")],
                                  capture_output=True, text=True, timeout=20, check=True)
        assert proc.url.startswith("https://") and json.loads(over_tls.stdout) == {"sas": []}
        assert httpx.post(proc.url + "/v1/revocations", content=b"x", verify=ctx, timeout=10).status_code == 400
        (tmp_path / "policy.yaml").write_text("rules: [{name: second, match: {role: ops}}]")
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any(e["event"] == "policy_reloaded" for e in proc.events()) and time.monotonic() < deadline:
            time.sleep(0.05)
        (reloaded,) = [e for e in proc.events() if e["event"] == "policy_reloaded"]
        assert reloaded["rules"] == ["second"]
        started = next(e for e in proc.events() if e["event"] == "responder_started")
        assert started["nat_port"] == cfg["nat_port"] and started["identity"] == "gw.example.test"
    finally:
        proc.stop()
    assert proc.proc is not None and proc.proc.returncode == 0
    assert any(e["event"] == "responder_stopped" for e in proc.events())
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode != 0 and "--cert" in bad.stderr
    wrong_key = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:1",
                                "--cert", str(tmp_path / "gw.pem"), "--key", str(tmp_path / "tls.key"),
                                "--ca-bundle", str(tmp_path / "root.pem")], capture_output=True, text=True, timeout=20)
    assert wrong_key.returncode == 2 and "is not the key of" in wrong_key.stderr


def test_push_listener_is_https_unless_plain_http_is_asked_for_by_name(tmp_path: Path) -> None:
    """check_push_options (gateway/server.py) and the YAML/CLI merge of --push-insecure-http."""
    import pytest

    from gateway.cli import _merge
    from gateway.server import ConfigError, ServeOptions, check_push_options

    base = {"listen": "127.0.0.1:500", "cert": Path("c"), "key": "k", "ca_bundle": Path("b")}
    with pytest.raises(ConfigError, match="--push-insecure-http"):
        check_push_options(ServeOptions(**base, push_listen="127.0.0.1:8444"))
    with pytest.raises(ConfigError, match="exclude each other"):
        check_push_options(ServeOptions(**base, push_listen="127.0.0.1:8444", push_tls_cert=Path("t"),
                                        push_insecure_http=True))
    with pytest.raises(ConfigError, match="need --push-listen"):
        check_push_options(ServeOptions(**base, push_insecure_http=True))
    check_push_options(ServeOptions(**base, push_listen="127.0.0.1:8444", push_tls_cert=Path("t")))
    check_push_options(ServeOptions(**base, push_listen="127.0.0.1:8444", push_insecure_http=True))
    check_push_options(ServeOptions(**base))  # no push listener at all

    (tmp_path / "r.yaml").write_text("push_listen: 127.0.0.1:8444\npush_insecure_http: true\n")
    # the CLI passes None when the flag is absent, so the YAML value stands
    assert _merge(tmp_path / "r.yaml", {"push_insecure_http": None})["push_insecure_http"] is True
