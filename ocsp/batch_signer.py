"""Fresh OCSP responses for concurrent requests, worked off in batches on one thread.

python-pkcs11 on SoftHSM is not thread-safe, so every signature of a process goes through one
thread. Handing each request to a thread pool separately costs a future, a queue hand-off and a
wake-up of the event loop per request, plus a store query each, and the threads then fight over
the GIL. Here the event loop appends a job to a queue; the worker thread takes everything queued
(up to ``max_batch``), hands the batch to ``work`` (for OCSP: one status query for all serials of
the batch, then one C_Sign per response: PKCS#11 has no batch sign for ECDSA/RSA) and resolves the
whole batch with one ``call_soon_threadsafe`` per event loop. Under load one wake-up carries tens
of responses; a lone request waits for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class Batcher(Generic[J, R]):
    """``await batcher.submit(job)`` from an event loop; ``work(jobs)`` runs on one daemon thread and
    returns one result or exception per job, in order."""

    def __init__(self, work: Callable[[Sequence[J]], list[R | BaseException]], max_batch: int = 64,
                 name: str = "batch") -> None:
        self.work = work
        self.max_batch = max_batch
        self.name = name
        self._queue: deque[tuple[J, asyncio.Future[R]]] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        self.done = 0

    async def submit(self, job: J) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        with self._cv:
            if self._closed:
                raise RuntimeError(f"{self.name} closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._queue.append((job, fut))
            if len(self._queue) == 1:
                self._cv.notify()
        return await fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
            try:
                results = self.work([job for job, _ in batch])
            except Exception as exc:  # the whole batch failed (e.g. the store is down)
                results = [exc] * len(batch)
            self.batches += 1
            self.done += len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            for (_, fut), result in zip(batch, results, strict=True):
                by_loop.setdefault(fut.get_loop(), []).append((fut, result))
            for loop, mine in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_deliver, mine)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()


def _deliver(results: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, value in results:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)
