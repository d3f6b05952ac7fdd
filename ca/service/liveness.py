"""What ``/healthz`` (liveness) reports: the process's background tasks are alive.

A background task (CRL publisher, push worker, …) is meant to run until shutdown, so one that has
finished has died. A task may also declare ``max_silence``: its loop calls :func:`beat` once per
round, and a task silent for longer is hung (e.g. a database or HSM call that never returns) —
the event loop and the HTTP listener can be perfectly fine meanwhile, which is why ``/healthz``
must look at the tasks and not only answer from the loop. A blocked event loop makes the probe
itself time out, which kubelet also counts as a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

_beats: dict[str, float] = {}  # task name -> monotonic time of its last round (this process)


def beat(name: str) -> None:
    """Called by a background task once per round of its loop."""
    _beats[name] = time.monotonic()


class Liveness:
    """Watches the running background tasks of one process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._watched: list[tuple[Any, asyncio.Task[None]]] = []

    def watch(self, specs: Sequence[Any], tasks: Sequence[asyncio.Task[None]]) -> None:
        """``specs`` are :class:`ca.service.server.BackgroundTask` (name, max_silence)."""
        self._watched = list(zip(specs, tasks, strict=True))

    def problems(self) -> list[str]:
        """One line per dead or silent task; empty when the process is alive."""
        out = []
        now = self.clock()
        for spec, task in self._watched:
            if task.done():
                reason = "cancelled" if task.cancelled() else repr(task.exception())[:200]
                out.append(f"{spec.name}: stopped ({reason})")
                continue
            limit = getattr(spec, "max_silence", None)
            if limit:
                silent = now - max(_beats.get(spec.name, self.started), self.started)
                if silent > limit:
                    out.append(f"{spec.name}: no round for {silent:.0f} s (limit {limit:.0f} s)")
        return out
