"""In-process checks of the PKIOperation decoder with default settings (single DES and SHA-1
off) and hypothesis fuzzing: any body gets HTTP 400 or a signed CertRep FAILURE, never an
exception or a 5xx, and nothing is stored."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrollment.scep import cms
from enrollment.scep.service import ScepService
from enrollment.scep.settings import ScepSettings
from tests.scep.pyclient import Requester, make_csr, read_certrep

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture(scope="module")
def service(deployment: Any) -> ScepService:
    return ScepService(deployment, ScepSettings())


@pytest.fixture(scope="module")
def base(service: ScepService) -> tuple[Requester, bytes]:
    req = Requester.new()
    csr = make_csr(req.key, "fuzz.example.test", "wrong-password", ("fuzz.example.test",))
    return req, req.message("19", csr, service.ra_certificate)


def fail_info(service: ScepService, req: Requester, body: bytes) -> str | None:
    answer = service.pki_operation(body, "machine", "test")
    assert answer.status == 200
    rep = read_certrep(answer.body, req)
    assert rep.status == "2"
    return rep.fail_info


def test_defaults_refuse_single_des_and_sha1(service: ScepService, base: tuple[Requester, bytes]) -> None:
    req, _ = base
    csr = make_csr(req.key, "des.example.test", "x", ("des.example.test",))
    ra = service.ra_certificate
    assert fail_info(service, req, req.message("19", csr, ra, cipher=cms.DES)) == "0"  # badAlg
    assert fail_info(service, req, req.message("19", csr, ra, digest="sha1")) == "0"
    caps = service.caps().body.decode().split()
    assert "SHA-1" not in caps and "GetNextCACert" not in caps and "AES" in caps


def test_wrong_password_is_bad_request(service: ScepService, base: tuple[Requester, bytes]) -> None:
    req, body = base
    assert fail_info(service, req, body) == "2"


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bodies(service: ScepService, deployment: Any, data: bytes) -> None:
    before = deployment.store.count()
    answer = service.pki_operation(data, "machine", "fuzz")
    assert answer.status in (200, 400)
    assert deployment.store.count() == before


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), min_size=1,
                      max_size=4),
       cut=st.one_of(st.none(), st.integers(min_value=0)))
def test_mutated_messages(service: ScepService, deployment: Any, base: tuple[Requester, bytes],
                          edits: list[tuple[int, int]], cut: int | None) -> None:
    req, good = base
    body = bytearray(good)
    for pos, xor in edits:
        body[pos % len(body)] ^= xor
    if cut is not None:
        body = body[: cut % len(body)]
    before = deployment.store.count()
    answer = service.pki_operation(bytes(body), "machine", "fuzz")
    assert answer.status in (200, 400)
    if answer.status == 200:
        assert read_certrep(answer.body, req).status == "2"
    assert deployment.store.count() == before


@FUZZ
@given(data=st.binary(max_size=1024))
def test_envelope_decoder(service: ScepService, data: bytes) -> None:
    with contextlib.suppress(cms.CmsError):
        cms.open_envelope(data, service.ra_certificate, service._unwrap, service.ciphers)
