"""ocsp.batch_signer.Batcher: jobs from several coroutines worked off in batches on one thread,
each caller getting its own result or exception."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from ocsp.batch_signer import Batcher


def test_each_job_gets_its_own_result_in_batches_on_one_thread() -> None:
    threads: set[str] = set()
    sizes: list[int] = []
    release = threading.Event()

    def work(jobs: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(jobs))
        release.wait(30)  # the first batch holds the thread until every job is queued
        threads.add(threading.current_thread().name)
        return [ValueError(f"odd {j}") if j % 7 == 3 else j * j for j in jobs]

    batcher: Batcher[int, int] = Batcher(work, max_batch=16, name="test-batch")

    async def go() -> list[int | BaseException]:
        pending = asyncio.gather(*(batcher.submit(i) for i in range(200)), return_exceptions=True)
        while sum(sizes) + len(batcher._queue) < 200:  # all queued or in the held first batch
            await asyncio.sleep(0.01)
        release.set()
        return await pending

    try:
        results = asyncio.run(go())
    finally:
        batcher.close()
    for i, r in enumerate(results):
        if i % 7 == 3:
            assert isinstance(r, ValueError) and str(r) == f"odd {i}"
        else:
            assert r == i * i
    assert threads == {"test-batch"}
    assert sum(sizes) == 200 and max(sizes) == 16 and len(sizes) <= 2 + 200 // 16


def test_a_failing_batch_fails_its_callers_and_the_next_batch_works() -> None:
    calls = 0

    def work(jobs: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("store down")
        return list(jobs)

    batcher: Batcher[int, int] = Batcher(work)

    async def go() -> None:
        with pytest.raises(OSError, match="store down"):
            await batcher.submit(1)
        assert await batcher.submit(2) == 2

    try:
        asyncio.run(go())
    finally:
        batcher.close()
    with pytest.raises(RuntimeError):
        asyncio.run(batcher.submit(3))
