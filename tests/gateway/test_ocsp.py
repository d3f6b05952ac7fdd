"""OCSP checking of peer certificates (RFC 6960) against a real HTTP OCSP responder."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from gw_ocsp import OcspServer
from gw_pki import build_pki, make_leaf, make_root

from gateway.clock import SystemClock
from gateway.revocation import OcspChecker, OcspMode, Revoked

PKI = build_pki()


@pytest.fixture
def server() -> Iterator[OcspServer]:
    srv = OcspServer(PKI.root)
    srv.start()
    yield srv
    srv.stop()


def _check(mode: OcspMode, cert, issuer=PKI.root.cert, checker: OcspChecker | None = None) -> None:  # type: ignore[no-untyped-def]
    asyncio.run((checker or OcspChecker(mode, SystemClock())).check(cert, issuer))


def test_good_revoked_and_cache(server: OcspServer) -> None:
    good = make_leaf(PKI.root, "g", email="g@example.test", ocsp_url=server.url)
    bad = make_leaf(PKI.root, "b", email="b@example.test", ocsp_url=server.url)
    server.certs = {good.cert.serial_number: good.cert, bad.cert.serial_number: bad.cert}
    server.revoked = {bad.cert.serial_number}
    checker = OcspChecker(OcspMode.STRICT, SystemClock())
    _check(OcspMode.STRICT, good.cert, checker=checker)
    _check(OcspMode.STRICT, good.cert, checker=checker)
    assert server.requests == 1, "cached until nextUpdate"
    for mode in (OcspMode.STRICT, OcspMode.RELAXED):
        with pytest.raises(Revoked, match="revoked"):
            _check(mode, bad.cert)
    _check(OcspMode.OFF, bad.cert)


def test_unavailable_status_strict_vs_relaxed(server: OcspServer) -> None:
    unknown = make_leaf(PKI.root, "u", email="u@example.test", ocsp_url=server.url)  # responder refuses it
    dead = make_leaf(PKI.root, "d", email="d@example.test", ocsp_url="http://127.0.0.1:9/")
    no_aia = PKI.clients["alice"].cert
    for cert in (unknown.cert, dead.cert, no_aia):
        _check(OcspMode.RELAXED, cert)
        with pytest.raises(Revoked, match="unavailable"):
            _check(OcspMode.STRICT, cert)


def test_response_signed_by_another_ca_is_ignored(server: OcspServer) -> None:
    server.issuer = make_root("impostor")  # signs with a key the real issuer never delegated
    cert = make_leaf(PKI.root, "x", email="x@example.test", ocsp_url=server.url)
    server.certs = {cert.cert.serial_number: cert.cert}
    server.revoked = {cert.cert.serial_number}
    _check(OcspMode.RELAXED, cert.cert)  # forged "revoked" is not believed either
    with pytest.raises(Revoked, match="unavailable"):
        _check(OcspMode.STRICT, cert.cert)
