"""Issue 21 defect 7: wrong EST pipeline passwords must not hold worker threads, the number
waiting is bounded (429 + Retry-After beyond it), and unknown user names cost the same PBKDF2
as known pipeline names.

Before the fix, each bad login waited on a 2-slot semaphore *inside* a worker thread: a flood of
them took every thread, and other requests (EST /cacerts, admin /whoami) queued behind all of
them. The check is by ordering, not by timing: /cacerts, sent once the flood is under way, must
be answered before most of the flood's 401s. The pipeline's PBKDF2 is made slow (400,000 iterations)
so that the order does not depend on how fast requests reach the server."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest

from enrollment.est import auth as est_auth
from enrollment.est.auth import Authenticator, hash_password
from enrollment.est.settings import EstSettings, PipelineSettings
from tests.conftest import start_server
from tests.est.est_helpers import PKCS10, b64, make_csr, new_key

PASSWORD = "flood-pipeline-pw"
FLOOD = 200


@pytest.fixture(scope="module")
def slow_pipeline_server(deployment_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("est-throttle")
    config = tmp / "ikepki.yaml"
    config.write_text((deployment_dir / "ikepki.yaml").read_text() + f"""
est:
  pipelines:
    flood: {{password_hash: "{hash_password(PASSWORD, 400_000)}"}}
""")
    server = start_server(deployment_dir, extra_args=("--config", str(config)))
    yield server
    server.stop()


def test_bad_login_flood_holds_no_worker_thread(slow_pipeline_server) -> None:  # type: ignore[no-untyped-def]
    server = slow_pipeline_server
    csr = b64(make_csr(new_key(), "flood", ["DNS:flood.example.test"]))
    url = f"{server.https_url}/.well-known/est/simpleenroll"
    order: list[str] = []

    async def bad_login(client: httpx.AsyncClient) -> httpx.Response:
        r = await client.post(url, content=csr, auth=("flood", "wrong"), headers={"Content-Type": PKCS10})
        order.append(str(r.status_code))
        return r

    async def go() -> tuple[list[httpx.Response], httpx.Response]:
        ctx = ssl.create_default_context(cafile=server.root_pem)
        limits = httpx.Limits(max_connections=FLOOD + 10, max_keepalive_connections=FLOOD + 10)
        async with httpx.AsyncClient(verify=ctx, timeout=120, limits=limits) as client:
            flood = [asyncio.create_task(bad_login(client)) for _ in range(FLOOD)]
            while "401" not in order:  # the flood is being answered: PBKDF2s are running
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # let the rest of the flood reach the server (one PBKDF2 takes longer)
            cacerts = await client.get(f"{server.https_url}/.well-known/est/cacerts")
            order.append("cacerts")
            return await asyncio.gather(*flood), cacerts

    responses, cacerts = asyncio.run(go())
    assert cacerts.status_code == 200
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {401, 429}, statuses
    before = order[:order.index("cacerts")].count("401")
    assert before < statuses.count(401) / 2, f"/cacerts waited for {before} of {statuses.count(401)} bad logins"
    assert statuses.count(429) > 0 and all(r.headers.get("retry-after") for r in responses if r.status_code == 429)
    assert statuses.count(401) >= est_auth.KdfThrottle().queue // 2  # the queued ones were really checked
    # and the right password still works afterwards
    with httpx.Client(verify=ssl.create_default_context(cafile=server.root_pem), timeout=30) as client:
        r = client.post(url, content=csr, auth=("flood", PASSWORD), headers={"Content-Type": PKCS10})
        assert r.status_code == 200, r.text


def test_unknown_names_cost_the_same_kdf_as_pipeline_names(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """Every Basic attempt that is not a remembered success runs exactly one PBKDF2 with the
    pipelines' parameters: wrong pipeline password, unknown name, device id with a wrong secret
    alike. The one exception: a device id with its correct one-time secret (constant-time SHA-256
    compare, no KDF), which only the secret's holder can send."""
    from datetime import UTC, datetime

    from ca.store import migrate
    from ca.store.db import Database
    from enrollment.est.registrations import DeviceRegistration, RegistrationStore

    url = f"sqlite:///{tmp_path / 'est.db'}"
    migrate.upgrade(url)
    db = Database(url)
    registrations = RegistrationStore(db)
    (issued,) = registrations.register([DeviceRegistration("dev-1", "machine", ("DNS:d1.example.test",))],
                                       datetime.now(UTC), "test", 1)
    settings = EstSettings(pipelines={"intune": PipelineSettings(password_hash=hash_password("pw", 1234))})
    authn = Authenticator(settings, registrations=registrations, store=None, clock=None)  # type: ignore[arg-type]
    calls: list[int] = []
    real = est_auth.verify_password

    def spy(password: str, encoded: str) -> bool:
        calls.append(int(encoded.split("$")[1]))
        return real(password, encoded)

    monkeypatch.setattr(est_auth, "verify_password", spy)

    async def go() -> list[bool | None]:
        return [await authn.check_basic("intune", "wrong"), await authn.check_basic("no-such-name", "x"),
                await authn.check_basic("intune", "pw"), await authn.check_basic("intune", "pw"),
                await authn.check_basic("dev-1", "not-the-secret")]

    assert asyncio.run(go()) == [False, None, True, True, None]
    assert calls == [1234, 1234, 1234, 1234]  # the 4th is a remembered success; the 5th a wrong device secret
    assert asyncio.run(authn.check_basic("dev-1", issued.secret)) is None
    assert len(calls) == 4  # the correct one-time secret: no KDF
    db.dispose()
