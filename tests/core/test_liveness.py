"""/healthz reflects the background tasks (ca/service/liveness.py): a dead task or a task whose
loop stopped beating makes the liveness probe fail; the HTTP listener alone answering is not enough."""

from __future__ import annotations

import asyncio
from typing import Any

from ca.service import liveness
from ca.service.asgi import Metrics, Router
from ca.service.server import BackgroundTask


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _forever() -> None:
    await asyncio.Event().wait()


async def _dies() -> None:
    raise RuntimeError("database gone")


def test_dead_and_silent_tasks_are_reported() -> None:
    async def go() -> None:
        clock = Clock()
        live = liveness.Liveness(clock)
        specs = [BackgroundTask("t-alive", _forever), BackgroundTask("t-beating", _forever, max_silence=60),
                 BackgroundTask("t-dies", _dies)]
        tasks = [asyncio.create_task(s.run()) for s in specs]
        live.watch(specs, tasks)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert live.problems() == ["t-dies: stopped (RuntimeError('database gone'))"]
        clock.now += 59
        assert len(live.problems()) == 1  # within max_silence since start
        clock.now += 2
        assert "t-beating: no round for 61 s (limit 60 s)" in live.problems()
        liveness._beats["t-beating"] = clock.now  # what liveness.beat records (monotonic clock)
        assert live.problems() == ["t-dies: stopped (RuntimeError('database gone'))"]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(p.endswith("(cancelled)") for p in live.problems()[:2])
    asyncio.run(go())


class _Dep:
    @property
    def root(self) -> Any:
        raise RuntimeError("no CA documents in this test")


async def _get(router: Router, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await router({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_healthz_is_503_with_the_problems_and_ok_otherwise() -> None:
    problems: list[str] = []
    router = Router("http", [], _Dep(), Metrics(), dict, lambda: problems)
    assert asyncio.run(_get(router, "/healthz")) == (200, b"ok\n")
    problems.append("push: no round for 130 s (limit 120 s)")
    assert asyncio.run(_get(router, "/healthz")) == (503, b"FAIL push: no round for 130 s (limit 120 s)\n")
