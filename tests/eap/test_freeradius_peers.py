"""FreeRADIUS 3.2.1 with ikepki's certificates and OCSP, seen by independent clients: wpa_supplicant's
eapol_test (EAP-TLS, EAP-GTC + rlm_totp) and the gateway's own RADIUS client (BlastRADIUS rules)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from radius_lab import Credential, FreeRadius, IkepkiPki, eapol_test, free_udp, totp

from gateway.radius import packet as rp
from gateway.radius.client import NoAnswer, RadiusClient, Server

pytestmark = pytest.mark.interop
SECRET = "peers-Secret-5521"


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[IkepkiPki, FreeRadius, dict[str, Credential], Path]]:
    if os.geteuid() != 0:
        pytest.fail("FreeRADIUS drops to user freerad: run as root")
    d = tmp_path_factory.mktemp("peers")
    pki = IkepkiPki.create(d)
    pki.start_ocsp()
    c = d / "certs"
    creds = {"radius": pki.issue("radius", "radius", "/O=ikepki test/CN=radius.example.test",
                                 "DNS:radius.example.test", c),
             "alice": pki.issue("alice", "user", "/O=ikepki test/CN=alice", "email:alice@example.test", c),
             "rita": pki.issue("rita", "user", "/O=ikepki test/CN=rita", "email:rita@example.test", c)}
    fr = FreeRadius(SECRET, creds["radius"], pki.chain_pem(), pki.ocsp_url)
    try:
        fr.start()
        yield pki, fr, creds, d
    finally:
        fr.cleanup()
        pki.stop()


def _tls_conf(pki: IkepkiPki, who: Credential, identity: str) -> str:
    return (f'network={{\n key_mgmt=WPA-EAP\n eap=TLS\n identity="{identity}"\n ca_cert="{pki.roots}"\n'
            f' client_cert="{who.cert}"\n private_key="{who.key}"\n}}\n')


def test_eapol_test_eap_tls_with_ikepki_user_certificate(peers) -> None:  # type: ignore[no-untyped-def]
    pki, fr, creds, d = peers
    r = eapol_test(_tls_conf(pki, creds["alice"], "alice@example.test"), d, fr.auth_port, SECRET)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("SUCCESS"), r.stdout[-2000:]
    assert "MPPE keys OK: 1" in r.stdout
    assert "ocsp: Cert status: good" in fr.log()


def test_eapol_test_identity_must_match_certificate(peers) -> None:  # type: ignore[no-untyped-def]
    """alice's certificate with bob's EAP identity: FreeRADIUS's post-auth check refuses it."""
    pki, fr, creds, d = peers
    r = eapol_test(_tls_conf(pki, creds["alice"], "bob@example.test"), d, fr.auth_port, SECRET)
    assert r.returncode != 0 and r.stdout.rstrip().endswith("FAILURE")
    assert "EAP identity is not the certificate's email" in fr.log()


def test_eapol_test_revoked_certificate_refused_by_ocsp(peers) -> None:  # type: ignore[no-untyped-def]
    pki, fr, creds, d = peers
    pki.revoke(creds["rita"].serial_hex)
    r = eapol_test(_tls_conf(pki, creds["rita"], "rita@example.test"), d, fr.auth_port, SECRET)
    assert r.returncode != 0 and r.stdout.rstrip().endswith("FAILURE")
    assert "ocsp: Cert status: revoked" in fr.log() and "Reason: keyCompromise" in fr.log()


def test_eapol_test_gtc_totp(peers) -> None:  # type: ignore[no-untyped-def]
    _, fr, _, d = peers

    def gtc(code: str) -> bool:
        conf = f'network={{\n key_mgmt=WPA-EAP\n eap=GTC\n identity="carl"\n password="{code}"\n}}\n'
        r = eapol_test(conf, d, fr.auth_port, SECRET, no_msk=True)
        return r.returncode == 0 and r.stdout.rstrip().endswith("SUCCESS")

    assert gtc(totp(fr.totp_secret))
    assert not gtc(f"{(int(totp(fr.totp_secret)) + 500000) % 1000000:06d}")
    assert "[totp] = ok" in fr.log() and "[totp] = fail" in fr.log()


def test_eapol_test_wrong_secret_gets_no_answer(peers) -> None:  # type: ignore[no-untyped-def]
    pki, fr, creds, d = peers
    r = eapol_test(_tls_conf(pki, creds["alice"], "alice@example.test"), d, fr.auth_port, "not-the-secret", timeout=4)
    assert not r.stdout.rstrip().endswith("SUCCESS")
    assert "invalid Message-Authenticator" in fr.log()


def test_freeradius_drops_requests_without_message_authenticator(peers) -> None:  # type: ignore[no-untyped-def]
    """require_message_authenticator = yes: an Access-Request without it is dropped (BlastRADIUS)."""
    _, fr, _, _ = peers
    body = rp.encode_attributes([(rp.Attr.USER_NAME, b"alice@example.test"),
                                 *rp.split_eap(b"\x02\x01\x00\x17\x01alice@example.test")])
    raw = bytes((1, 77)) + (20 + len(body)).to_bytes(2, "big") + os.urandom(16) + body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(raw, ("127.0.0.1", fr.auth_port))
        with pytest.raises(TimeoutError):
            s.recv(4096)
    assert "Packet does not contain required Message-Authenticator attribute" in fr.log()


def test_our_client_refuses_answers_without_message_authenticator(peers) -> None:  # type: ignore[no-untyped-def]
    """FreeRADIUS 3.2.1 answers Status-Server (RFC 5997) with an Access-Accept that has no
    Message-Authenticator: the gateway's client discards it, unless told not to require one."""
    _, fr, _, _ = peers
    server = Server("127.0.0.1", fr.auth_port, SECRET.encode(), "freeradius")

    async def go(require: bool) -> rp.Packet:
        return (await RadiusClient([server], 1.0, 0).transact(12, [], require_ma=require)).packet

    with pytest.raises(NoAnswer, match="Message-Authenticator missing"):
        asyncio.run(go(True))
    assert asyncio.run(go(False)).code == rp.Code.ACCESS_ACCEPT


def test_failover_and_dead_servers_never_block_the_loop(peers) -> None:  # type: ignore[no-untyped-def]
    _, fr, _, _ = peers
    dead = [Server("127.0.0.1", free_udp(), SECRET.encode(), f"dead{i}") for i in range(2)]
    live = Server("127.0.0.1", fr.auth_port, SECRET.encode(), "freeradius")

    async def scenario() -> tuple[str, int, float, str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        t = asyncio.create_task(ticker())
        client = RadiusClient([*dead, live], 0.5, 1)
        answer = await client.transact(12, [], require_ma=False)
        started = time.monotonic()
        try:
            await RadiusClient(dead, 0.5, 1).transact(12, [])
            err = ""
        except NoAnswer as exc:
            err = str(exc)
        elapsed = time.monotonic() - started
        t.cancel()
        return answer.server.name, ticks, elapsed, err

    name, ticks, elapsed, err = asyncio.run(scenario())
    assert name == "freeradius"  # after 2 dead servers x 2 tries x 0.5 s
    assert ticks >= 20  # the loop kept running while waiting
    assert "dead0" in err and "dead1" in err and elapsed < 10
