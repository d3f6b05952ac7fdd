"""The whole in-process ASGI app of the session deployment (both listeners, every installed
plug-in), driven through httpx's ASGI transport on one event loop: fast enough to throw
hundreds of hostile requests at every route in seconds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ca.service.asgi import Metrics, app_for
from ca.service.mounts import HTTP, HTTPS, load_mounts


@dataclass
class InProcess:
    loop: asyncio.AbstractEventLoop
    https: httpx.AsyncClient
    http: httpx.AsyncClient
    token: str

    def request(self, listener: str, method: str, url: str, **kw: Any) -> httpx.Response:
        client = self.https if listener == HTTPS else self.http
        return self.loop.run_until_complete(client.request(method, url, **kw))

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="package")
def app(deployment: Any, deployment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    # device posture on (its routes are inert without a policy): a one-class policy, read at mount time
    policy = tmp_path_factory.mktemp("hostile-posture") / "posture.yaml"
    policy.write_text("classes: {laptop: {facts: {disk_encryption: true}}}\n")
    os.environ["IKEPKI_POSTURE_POLICY"] = str(policy)
    try:
        mounts = load_mounts(deployment)
    finally:
        del os.environ["IKEPKI_POSTURE_POLICY"]
    metrics = Metrics()
    loop = asyncio.new_event_loop()
    clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app_for(name, mounts, deployment, metrics,
                                                                                   deployment.ready),
                                                                      client=("127.0.0.1", 40000)),
                                       base_url="https://ikepki.test", timeout=30)
               for name in (HTTPS, HTTP)}
    yield InProcess(loop, clients[HTTPS], clients[HTTP], (deployment_dir / "admin-token").read_text().strip())
    for c in clients.values():
        loop.run_until_complete(c.aclose())
    loop.close()
