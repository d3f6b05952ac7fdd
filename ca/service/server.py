"""``ikepki serve``: one process, two listeners (HTTPS for enrollment and admin, plain HTTP
for OCSP, CRL and SCEP), plus the background tasks protocol packages register.

The HTTPS listener asks for (but does not require) a client certificate and exposes it to
the apps through the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``).
Certificate time validity is not checked during the handshake so that apps can answer an
expired client certificate with a clear protocol error instead of a TLS alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding

from ca.service.asgi import Metrics, app_for
from ca.service.limits import LimitedHttpProtocol, LimitedServer, ListenerSettings
from ca.service.liveness import Liveness
from ca.service.log_limit import rate_limit_loggers
from ca.service.mounts import HTTP, HTTPS, HttpMount, load_mounts

if TYPE_CHECKING:
    from ca.deployment import Deployment

log = logging.getLogger("ikepki.service")
_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME: apps check validity themselves
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS"


class TlsAwareProtocol(LimitedHttpProtocol):
    """uvicorn's httptools protocol with the listener limits (ca/service/limits.py) plus the ASGI TLS
    extension with the peer certificate."""

    _tls_ext: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            der = ssl_obj.getpeercert(binary_form=True)
            self._tls_ext = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                             "client_cert_der": der, "tls_version": ssl_obj.version()}

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls_ext is not None:
            self.scope["extensions"] = {"tls": self._tls_ext}  # type: ignore[typeddict-unknown-key, dict-item]


def client_ca_bundle(deployment: Deployment) -> Path:
    """Root + issuing CAs, trusted for client certificates (EST re-enroll, admin certs)."""
    path = deployment.path("tls/client-ca-bundle.pem")
    certs = [deployment.root, *(i.certificate for i in deployment.issuers.values())]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # workers start together: replace, never truncate
    tmp.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    tmp.replace(path)
    return path


def tls_context(deployment: Deployment) -> ssl.SSLContext:
    cert, key = deployment.tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if deployment.settings.tls_min_version == "1.2" \
        else ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_ciphers(TLS_CIPHERS)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(str(client_ca_bundle(deployment)))
    ctx.verify_flags |= _NO_CHECK_TIME  # type: ignore[assignment]
    return ctx


@dataclass(frozen=True)
class BackgroundTask:
    """A long-running coroutine started with the server (CRL publisher, push worker, ...)."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    max_silence: float | None = None  # seconds without a liveness.beat(name) before /healthz fails


def load_background_tasks(deployment: Deployment, only: set[str] | None = None) -> list[BackgroundTask]:
    tasks: list[BackgroundTask] = []
    for ep in sorted(entry_points(group="ikepki.workers"), key=lambda e: e.name):
        if only is not None and ep.name not in only:
            continue
        try:
            factory = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and ep.value.startswith(exc.name):
                continue
            raise
        tasks.extend(factory(deployment))
    return tasks


def _uvicorn_config(app: Any, host: str, port: int, ssl_ctx: ssl.SSLContext | None,
                    limits: ListenerSettings) -> uvicorn.Config:
    kwargs: dict[str, Any] = {"host": host, "port": port, "http": TlsAwareProtocol, "lifespan": "off",
                              "access_log": False, "log_level": "warning",
                              "timeout_keep_alive": limits.keep_alive_seconds, "timeout_graceful_shutdown": 2,
                              "backlog": BACKLOG,
                              "server_header": False}
    if ssl_ctx is not None:
        kwargs["ssl_context_factory"] = lambda _cfg, _default: ssl_ctx
    return uvicorn.Config(app, **kwargs)


async def _until_signalled(work: asyncio.Future[Any]) -> None:
    """Wait for ``work`` or SIGTERM/SIGINT. Without listeners nothing else handles SIGTERM, and as
    PID 1 of a container (`ikepki worker` in charts/ikepki) its default action does not apply:
    the pod would sit out its whole grace period and be SIGKILLed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()  # a task that failed fails the worker
    finally:
        if not work.done():
            work.cancel()  # cancels the tasks it gathers
            with contextlib.suppress(asyncio.CancelledError):
                await work
        stopper.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


FD_RESERVE = 64  # descriptors kept for the database, the HSM, logs, outgoing pushes
BACKLOG = 256  # listen() backlog; also how many connections one accept burst may take at once


def fit_file_limit(limits: ListenerSettings, listeners: int) -> ListenerSettings:
    """Raise the soft RLIMIT_NOFILE to the hard limit, then lower ``max_connections`` if the
    listeners' caps would not fit in it: the cap, not EMFILE on accept, must refuse connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open file limit from %d: %s", soft, exc)
    if soft == resource.RLIM_INFINITY or listeners == 0:
        return limits
    fits = max(1, (soft - FD_RESERVE) // listeners - BACKLOG)
    if limits.max_connections > fits:
        log.warning("listener.max_connections %d does not fit the open file limit %d: using %d per listener",
                    limits.max_connections, soft, fits)
        return limits.model_copy(update={"max_connections": fits})
    return limits


async def run_servers(deployment: Deployment, host: str, https_port: int | None, http_port: int | None,
                      mounts: list[HttpMount] | None = None, tasks: list[BackgroundTask] | None = None,
                      ready: Callable[[], None] | None = None,
                      sockets: Mapping[str, socket.socket] | None = None, metrics: Metrics | None = None,
                      share: int = 1) -> None:
    """Serve the listeners until a signal stops them. ``sockets`` (listener name -> bound, listening
    socket) replaces ``https_port``/``http_port`` in a worker of ``ikepki serve --workers N``
    (ca/service/supervisor.py); ``share`` is how many workers accept on them, so each takes its
    part of ``listener.max_connections``."""
    mounts = load_mounts(deployment) if mounts is None else mounts
    if sockets is not None:
        https_port, http_port = (sockets[n].getsockname()[1] if n in sockets else None for n in (HTTPS, HTTP))
    limits = deployment.settings_for(ListenerSettings, "listener")
    if share > 1:
        limits = limits.model_copy(update={"max_connections": -(-limits.max_connections // share)})
    limits = fit_file_limit(limits, (https_port is not None) + (http_port is not None))
    rate_limit_loggers("asyncio", "uvicorn.error", "ikepki.service")
    metrics = metrics or Metrics()
    liveness = Liveness()

    def alive() -> list[str]:  # /healthz: background tasks (ca/service/liveness.py) and the HSM
        return [*liveness.problems(), *deployment.live()]

    servers: list[tuple[uvicorn.Server, list[socket.socket] | None]] = []
    if https_port is not None:
        app = app_for(HTTPS, mounts, deployment, metrics, deployment.ready, alive)
        servers.append((LimitedServer(_uvicorn_config(app, host, https_port, tls_context(deployment), limits),
                                      limits), [sockets[HTTPS]] if sockets else None))
    if http_port is not None:
        app = app_for(HTTP, mounts, deployment, metrics, deployment.ready, alive)
        servers.append((LimitedServer(_uvicorn_config(app, host, http_port, None, limits), limits),
                        [sockets[HTTP]] if sockets else None))
    running = [asyncio.create_task(t.run(), name=t.name) for t in (tasks or [])]
    liveness.watch(tasks or [], running)
    metrics.running_tasks = lambda: [t.get_name() for t in running if not t.done()]
    serving = [asyncio.create_task(s.serve(socks)) for s, socks in servers]
    flushing = asyncio.create_task(metrics.flush_loop()) if metrics.share_dir is not None else None
    while not all(s.started for s, _ in servers):
        if any(t.done() for t in serving):
            break
        await asyncio.sleep(0.02)
    if ready is not None and all(s.started for s, _ in servers):
        ready()
    try:
        if serving:
            await asyncio.gather(*serving)  # uvicorn handles SIGTERM/SIGINT
        else:
            await _until_signalled(asyncio.gather(*running))
    finally:
        for t in [*running, *([flushing] if flushing else [])]:
            t.cancel()
        await asyncio.gather(*running, *([flushing] if flushing else []), return_exceptions=True)
        metrics.flush()
