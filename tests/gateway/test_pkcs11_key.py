"""The responder's own key on a PKCS#11 token (`--key pkcs11:…`, RFC 7512): strongSwan charon
authenticates the responder's AUTH payload signed inside SoftHSM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from gw_pki import build_pki, make_leaf
from gw_procs import Charon, Conn, ResponderProc, free_port, free_udp_pair

pytestmark = pytest.mark.interop
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class _TokenKey:
    """Stands for the token key when the test CA certifies its public half."""

    def __init__(self, der: bytes) -> None:
        self._pub = load_der_public_key(der)

    def public_key(self):  # type: ignore[no-untyped-def]
        return self._pub


def test_responder_signs_ike_auth_with_a_softhsm_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0 or not shutil.which("pkcs11-tool"):
        pytest.fail("needs root, SoftHSM and opensc's pkcs11-tool (make setup)")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    (tmp_path / "pin").write_text("4321\n")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "gw-token", "--so-pin", "87654321",
                    "--pin", "4321"], env=env, check=True, capture_output=True)
    tool = ["pkcs11-tool", "--module", MODULE, "--token-label", "gw-token", "--login", "--pin", "4321"]
    subprocess.run([*tool, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "gw-key", "--id", "01"],
                   env=env, check=True, capture_output=True)
    subprocess.run([*tool, "--read-object", "--type", "pubkey", "--id", "01", "-o", str(tmp_path / "pub.der")],
                   env=env, check=True, capture_output=True)

    pki = build_pki()
    gw = make_leaf(pki.root, "gw.example.test", dns="gw.example.test",
                   key=_TokenKey((tmp_path / "pub.der").read_bytes()))  # type: ignore[arg-type]
    (tmp_path / "gw.pem").write_bytes(gw.cert_pem() + pki.root.cert_pem())
    (tmp_path / "root.pem").write_bytes(pki.root.cert_pem())
    uri = (f"pkcs11:token=gw-token;object=gw-key;type=private?module-path={MODULE}"
           f"&pin-source=file:{tmp_path / 'pin'}")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # for the responder process only
    state = tmp_path / "responder"
    state.mkdir()
    responder = ResponderProc(state, free_port(), free_port(0x1), ["--cert", str(tmp_path / "gw.pem"), "--key", uri,
                                                                 "--ca-bundle", str(tmp_path / "root.pem"),
                                                                 "--ocsp", "off"])
    port, nat = free_udp_pair()
    charon = Charon(tmp_path / "charon", port, nat)
    charon.state.mkdir()
    alice = pki.clients["alice"]
    charon.write_config([Conn("alice", "alice", "alice@example.test", children=False)], responder.port,
                        {"alice": (alice.cert_pem(), alice.key_pem())}, {"root": pki.root.cert_pem()})
    try:
        responder.start()
        charon.start()
        ok, log = charon.initiate("alice")
        assert ok, f"{log}\n{charon.log()[-3000:]}"
        assert [sa for sa in responder.sas() if "alice@example.test" in sa["peer_id"]]
    finally:
        charon.stop()
        responder.stop()


def test_bad_pkcs11_uri_is_one_readable_error(tmp_path: Path) -> None:
    pki = build_pki()
    pki.write(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--listen", f"127.0.0.1:{free_port()}",
                           "--cert", str(tmp_path / "gw.pem"), "--ca-bundle", str(tmp_path / "root.pem"),
                           "--key", "pkcs11:token=nosuch;object=k?pin-value=secret-pin&pin-source=env:NO_SUCH_PIN"],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "PATH": os.environ["PATH"]}, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --key pkcs11:"), proc.stderr
    assert "secret-pin" not in proc.stderr
