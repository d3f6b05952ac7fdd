"""``ikepki serve --workers N`` / ``ikepki ocsp serve --workers N``: a pre-fork supervisor.

The supervisor binds the listening sockets once and starts N worker processes with the *spawn*
start method (fresh interpreters: python-pkcs11 must not cross a fork, and every worker opens
its own PKCS#11 session and login and its own database pool). All workers accept on the same
sockets, so the kernel spreads connections over them and every core serves requests.

- Background work (CRL publisher, push worker, signer rotation, cleanup: the ``ikepki.workers``
  entry points) runs in worker 0 only; a replaced worker 0 starts it again. Across replicas the
  existing leases (ocsp/lease.py) keep it to one.
- A worker that exits while the service runs is replaced (same index); one that keeps dying
  (``CRASH_LIMIT`` exits within ``CRASH_WINDOW`` seconds) stops the service with exit status 1,
  and so does one that dies before it is ready.
- SIGTERM / SIGINT: every worker gets SIGTERM and drains (uvicorn's graceful shutdown); those
  still running after ``grace`` seconds are killed. Workers die with the supervisor
  (``PR_SET_PDEATHSIG``) even if it is killed outright.
- ``/metrics`` reports the sum over the workers (ca/service/asgi.py :class:`Metrics`).
- SQLite stays correct with several writer processes: writes take the lock up front
  (``BEGIN IMMEDIATE``) and wait up to the busy timeout (ca/store/db.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from ca.errors import ErrorKind, PKIError

log = logging.getLogger("ikepki.service")
CRASH_LIMIT, CRASH_WINDOW = 5, 60.0
START_TIMEOUT = 120.0  # seconds for a worker to open the deployment and listen
EXIT_FAILED = 3  # a worker's status when it could not start (the reason went to the supervisor)
_PR_SET_PDEATHSIG = 1
SERVICE_PID_ENV = "IKEPKI_SERVICE_PID"  # set in workers: the supervisor's pid
SHARE_DIR_ENV = "IKEPKI_SERVICE_SHARE_DIR"  # set in workers: a private directory of the service


def service_share_dir(name: str) -> Path | None:
    """``<the service's private temporary directory>/<name>`` in a worker of ``--workers N`` (for
    state the workers share, e.g. pre-signed OCSP responses); None in a single process."""
    base = os.environ.get(SHARE_DIR_ENV)
    return Path(base) / name if base else None


def service_pid() -> int:
    """The pid an operator knows this service by: the supervisor's in a worker, else our own."""
    value = os.environ.get(SERVICE_PID_ENV, "")
    return int(value) if value.isdigit() else os.getpid()


def default_workers(configured: int, cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """``workers: 0`` (the default) means one per CPU core this process may use: the CPUs it may run
    on, capped by a cgroup v2 CPU quota (a container limited to 2 CPUs on a 64-core node gets 2)."""
    if configured > 0:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket (IPv6 for a host with a colon, like uvicorn), SO_REUSEADDR set."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted connections
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to start (pickled to the spawned interpreter)."""

    directory: Path
    config: Path | None
    host: str
    plugins: frozenset[str] | None  # entry-point names of mounts and background tasks; None: all
    background: bool  # run the background tasks (in worker 0)
    workers: int
    metrics_dir: Path
    open_authority: bool = True  # open the HSM and the store before accepting (fail early)
    setup: Callable[[], None] | None = None  # module-level function run first in each worker
    started: float = field(default_factory=time.time)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


OPEN_ATTEMPTS = 8


def open_for_service(directory: Path, config: Path | None, who: str, open_authority: bool = True) -> Any:
    """Open the deployment (and the HSM session, the store) before accepting. Workers, the
    supervisor and other processes (CLI commands, other replicas) log in to the same token at once:
    SoftHSM answers some of those concurrent calls with CKR_GENERAL_ERROR or lists no token for a
    moment ("token not found"), so an unavailable token is retried with backoff (a fresh
    deployment each time) before giving up."""
    from ca.deployment import Deployment

    for attempt in range(1, OPEN_ATTEMPTS + 1):
        dep = Deployment.open(directory, config)
        if not open_authority:
            return dep
        try:
            _ = dep.authority
            return dep
        except PKIError as exc:
            if exc.kind is not ErrorKind.UNAVAILABLE or attempt == OPEN_ATTEMPTS:
                raise
            log.warning("%s: %s (attempt %d of %d)", who, exc.detail, attempt, OPEN_ATTEMPTS)
            time.sleep(min(5.0, 0.2 * 2 ** attempt) * (0.5 + random.random()))
            if dep.settings.hsm_module:  # start-up: nothing else in this process uses the module yet
                from ca.keys.pkcs11 import rescan

                rescan(dep.settings.hsm_module)
    raise AssertionError("unreachable")


def _open_deployment(spec: WorkerSpec, index: int) -> Any:
    return open_for_service(spec.directory, spec.config, f"worker {index}", spec.open_authority)


def worker_main(spec: WorkerSpec, index: int, sockets: dict[str, socket.socket], conn: Connection,
                parent: int) -> None:
    """Entry point of one worker (a spawned interpreter)."""
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        return
    os.environ[SERVICE_PID_ENV] = str(parent)
    os.environ[SHARE_DIR_ENV] = str(spec.metrics_dir.parent)
    from ca.service.asgi import Metrics
    from ca.service.mounts import load_mounts
    from ca.service.server import load_background_tasks, run_servers

    if spec.setup is not None:
        spec.setup()  # the front end's logging set-up (pickled by reference)
    try:
        dep = _open_deployment(spec, index)
        mounts = load_mounts(dep, only=set(spec.plugins) if spec.plugins is not None else None)
        tasks = load_background_tasks(dep, only=set(spec.plugins) if spec.plugins is not None else None) \
            if spec.background and index == 0 else []
    except PKIError as exc:  # e.g. an invalid setting: the supervisor reports it as the CLI does, once
        conn.send(("failed", index, exc.kind.name, exc.detail))
        conn.close()
        sys.exit(EXIT_FAILED)
    metrics = Metrics(spec.metrics_dir, spec.started)

    def ready() -> None:
        conn.send(("ready", index))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_servers(dep, spec.host, None, None, mounts=mounts, tasks=tasks, ready=ready,
                                sockets=sockets, metrics=metrics, share=spec.workers))


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    started: float
    ready: bool = False

    def read_message(self) -> None:
        """Take the worker's message if one is waiting: "ready", or "failed" (it cannot start, so
        neither can the service: raised as the CLI's one line and exit status)."""
        with contextlib.suppress(EOFError, OSError):
            if not self.conn.poll():
                return
            message = self.conn.recv()
            if message[0] == "ready":
                self.ready = True
            elif message[0] == "failed":
                raise PKIError(ErrorKind[message[2]], message[3])


class Supervisor:
    """Starts, watches, replaces and stops the workers of one replica."""

    def __init__(self, spec: WorkerSpec, sockets: dict[str, socket.socket], grace: float = 8.0) -> None:
        self.spec = spec
        self.sockets = sockets
        self.grace = grace
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: dict[int, _Worker] = {}
        self.crashes: list[float] = []
        self.stopping = False
        self.replaced = 0

    def _spawn(self, index: int) -> _Worker:
        ours, theirs = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=worker_main, name=f"ikepki-worker-{index}", daemon=False,
                                args=(self.spec, index, self.sockets, theirs, os.getpid()))
        proc.start()
        theirs.close()
        worker = _Worker(index, proc, ours, time.monotonic())
        self.workers[index] = worker
        return worker

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Serve until SIGTERM/SIGINT; the exit status for the CLI."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for i in range(self.spec.workers):
                self._spawn(i)
            announced = False
            while not self.stopping:
                status = self._watch()
                if status is not None:
                    return status
                if not announced and all(w.ready for w in self.workers.values()):
                    announced = True
                    if ready is not None:
                        ready()
            return 0
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)

    def _watch(self) -> int | None:
        """One round: collect readiness, replace dead workers. An exit status ends the service."""
        waitables: list[Any] = []
        for w in self.workers.values():
            waitables += [w.process.sentinel] if w.ready else [w.process.sentinel, w.conn]
        for obj in wait(waitables, timeout=0.5):
            for w in list(self.workers.values()):
                if obj is w.conn:
                    w.read_message()
        now = time.monotonic()
        for w in list(self.workers.values()):
            if not w.ready and now - w.started > START_TIMEOUT:
                log.error("worker %d did not start within %.0f s", w.index, START_TIMEOUT)
                return 1
            if w.process.is_alive() or self.stopping:
                continue
            code = w.process.exitcode
            if not w.ready:
                w.read_message()  # its last message may still be in the pipe
            w.conn.close()
            if not w.ready:
                log.error("worker %d exited with status %s before it was ready", w.index, code)
                return 1
            self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW] + [now]
            if len(self.crashes) > CRASH_LIMIT:
                log.error("workers exited %d times within %.0f s: stopping", len(self.crashes), CRASH_WINDOW)
                return 1
            log.warning("worker %d (pid %s) exited with status %s: starting a new one", w.index, w.process.pid, code)
            self.replaced += 1
            self._spawn(w.index)
        return None

    def stop(self) -> None:
        """SIGTERM to every worker, wait up to ``grace`` seconds for them to drain, then kill."""
        self.stopping = True
        for w in self.workers.values():
            if w.process.is_alive() and w.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for w in self.workers.values():
            w.process.join(max(0.0, deadline - time.monotonic()))
        for w in self.workers.values():
            if w.process.is_alive():
                log.warning("worker %d did not drain within %.0f s: killing it", w.index, self.grace)
                w.process.kill()
                w.process.join(5)
            with contextlib.suppress(OSError):
                w.conn.close()


def serve_workers(spec_args: dict[str, Any], ports: dict[str, int], backlog: int,
                  ready: Callable[[], None] | None = None) -> int:
    """Bind ``ports`` (listener name -> port), run the supervisor, clean up; the exit status."""
    share_dir = Path(tempfile.mkdtemp(prefix="ikepki-service-"))  # 0700, removed at exit
    metrics_dir = share_dir / "metrics"
    metrics_dir.mkdir()
    sockets = {name: bind(spec_args["host"], port, backlog) for name, port in ports.items()}
    try:
        spec = WorkerSpec(metrics_dir=metrics_dir, **spec_args)
        return Supervisor(spec, sockets).run(ready)
    finally:
        for s in sockets.values():
            s.close()
        shutil.rmtree(share_dir, ignore_errors=True)
        sys.stdout.flush()
