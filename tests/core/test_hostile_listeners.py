"""Issue 21 defect 5: every listener against every hostile-client probe (tests/hostile.py).

Listeners: ``ikepki serve`` (HTTPS and HTTP), ``ikepki ocsp serve`` (real processes with short
limits from the environment) and the responder's push listener (HTTP and HTTPS, in a thread).
Each listener must close slow, idle, oversized and garbage connections within its limits,
answer /healthz promptly throughout, refuse connections over its cap with a prompt 503, keep its
file descriptors and log bounded, and recover once the flood is over."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.service.log_limit import RateLimitFilter
from tests import hostile
from tests.conftest import IKEPKI, free_port, start_server

LIMIT = 1.0  # seconds: header, body, handshake and keep-alive limits of the listeners under test
CAP = 40  # connections per listener
LIMITS_ENV = {"IKEPKI_LISTENER_HEADER_TIMEOUT_SECONDS": str(LIMIT), "IKEPKI_LISTENER_BODY_TIMEOUT_SECONDS": str(LIMIT),
              "IKEPKI_LISTENER_HANDSHAKE_TIMEOUT_SECONDS": str(LIMIT),
              "IKEPKI_LISTENER_KEEP_ALIVE_SECONDS": str(LIMIT), "IKEPKI_LISTENER_MAX_CONNECTIONS": str(CAP),
              "IKEPKI_LISTENER_MAX_BODY_BYTES": str(1 << 20)}
EXPECTED = {"oversized_headers": {431}, "many_headers": {431}, "oversized_body": {413}, "long_url": {414, 431}}


@dataclass
class Listener:
    host: str
    port: int
    tls: bool
    pid: int | None  # server process (None: in this process)
    log: Path | None
    open_connections: Callable[[], int]


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "push.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp / "push.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "push.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "push.pem", tmp / "push.key")
    return ctx


@pytest.fixture(scope="module")
def listeners(deployment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Listener]]:
    from gateway.push import ControlApi, PushLimits, serve_tcp

    tmp = tmp_path_factory.mktemp("hostile")
    server = start_server(deployment_dir, env=LIMITS_ENV)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"} | LIMITS_ENV
    ocsp_log = tmp / "ocsp-serve.log"
    ocsp = subprocess.Popen([IKEPKI, "ocsp", "serve", "--dir", str(deployment_dir), "--port", str(port),
                             "--no-workers"], stdout=ocsp_log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    limits = PushLimits(max_connections=CAP, timeout=LIMIT)
    api = ControlApi(None)  # type: ignore[arg-type]  # /healthz needs no responder; revocations are not probed
    push_plain = asyncio.run_coroutine_threadsafe(serve_tcp(api, "127.0.0.1", 0, None, limits), loop).result(10)
    push_tls = asyncio.run_coroutine_threadsafe(serve_tcp(api, "127.0.0.1", 0, _self_signed(tmp), limits),
                                                loop).result(10)
    try:
        deadline = time.monotonic() + 60
        while hostile.healthz("127.0.0.1", port, False) != 200:
            assert ocsp.poll() is None and time.monotonic() < deadline, ocsp_log.read_text()
            time.sleep(0.2)

        def fds(pid: int) -> Callable[[], int]:
            return lambda: _fds(pid)

        yield {
            "serve-https": Listener("127.0.0.1", server.https_port, True, server.process.pid, server.log,
                                    fds(server.process.pid)),
            "serve-http": Listener("127.0.0.1", server.http_port, False, server.process.pid, server.log,
                                   fds(server.process.pid)),
            "ocsp-serve": Listener("127.0.0.1", port, False, ocsp.pid, ocsp_log, fds(ocsp.pid)),
            "push-http": Listener("127.0.0.1", push_plain.sockets[0].getsockname()[1], False, None, None,
                                  lambda: 0),
            "push-https": Listener("127.0.0.1", push_tls.sockets[0].getsockname()[1], True, None, None,
                                   lambda: 0),
        }
    finally:
        for srv in (push_plain, push_tls):
            loop.call_soon_threadsafe(srv.close)
        loop.call_soon_threadsafe(loop.stop)
        server.stop()
        ocsp.terminate()
        try:
            ocsp.wait(10)
        except subprocess.TimeoutExpired:
            ocsp.kill()
            ocsp.wait(5)


NAMES = ["serve-https", "serve-http", "ocsp-serve", "push-http", "push-https"]


@pytest.mark.parametrize("name", NAMES)
def test_every_probe_is_bounded_and_healthz_stays_prompt(listeners: dict[str, Listener], name: str) -> None:
    lst = listeners[name]
    rss_before = _rss_kb(lst.pid) if lst.pid else 0
    with ThreadPoolExecutor(len(hostile.PROBES)) as pool:
        futures = {probe: pool.submit(fn, lst.host, lst.port, lst.tls) for probe, fn in hostile.PROBES.items()}
        health: list[tuple[int | None, float]] = []
        while not all(f.done() for f in futures.values()):
            t0 = time.monotonic()
            health.append((hostile.healthz(lst.host, lst.port, lst.tls), time.monotonic() - t0))
            time.sleep(0.2)
        outcomes = {probe: f.result() for probe, f in futures.items()}
    assert all(status == 200 for status, _ in health), health
    held = {p: o for p, o in outcomes.items() if o.held or o.seconds > LIMIT + 2.5}
    assert not held, f"{name} kept hostile connections open: {held}"
    server_errors = {p: o.status for p, o in outcomes.items() if o.status is not None and o.status >= 500}
    assert not server_errors, server_errors
    for probe, statuses in EXPECTED.items():
        assert outcomes[probe].status in statuses, (probe, outcomes[probe])
    if lst.pid:
        assert _rss_kb(lst.pid) - rss_before < 64 * 1024, "RSS grew by more than 64 MB"


@pytest.mark.parametrize("name", NAMES)
def test_connection_cap_refuses_promptly_and_recovers(listeners: dict[str, Listener], name: str) -> None:
    lst = listeners[name]
    baseline = lst.open_connections()
    idle = hostile.open_idle(lst.host, lst.port, CAP + 10)
    try:
        t0 = time.monotonic()
        status = hostile.healthz(lst.host, lst.port, lst.tls)
        assert status in (200, 503) and time.monotonic() - t0 < 2, status  # answered, not hung
        if lst.pid:
            assert lst.open_connections() <= baseline + CAP + 15
        time.sleep(LIMIT + 0.5)  # the idle ones time out ...
        deadline = time.monotonic() + 10  # ... and are swept (later on a loaded machine): it recovers
        while (status := hostile.healthz(lst.host, lst.port, lst.tls)) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200
        still_open = sum(not _closed_by_peer(sock) for sock in idle)
        assert still_open == 0, f"{still_open} idle connections still open"
    finally:
        for sock in idle:
            sock.close()
    if lst.log is not None:
        assert lst.log.stat().st_size < 64 * 1024, "log flooded"


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_rate_limit_filter_suppresses_floods() -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("tests.hostile.flood")
    logger.propagate = False
    handler = Collect()
    handler.addFilter(RateLimitFilter(period=0.5, burst=3))
    logger.addHandler(handler)
    try:
        for i in range(1000):
            logger.warning("accept failed: %s", i)
        logger.warning("another message")
        time.sleep(0.6)
        logger.warning("accept failed: %s", "later")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "accept failed: 0", "accept failed: 1", "accept failed: 2", "another message",
        "accept failed: later [997 similar messages suppressed in the last 0.5 s]"]


def test_listener_limits_configurable() -> None:
    from ca.service.limits import ListenerSettings

    assert ListenerSettings().max_connections == 1000
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IKEPKI_LISTENER_MAX_HEADER_BYTES", "4096")
        assert ListenerSettings().max_header_bytes == 4096


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_connection_flood_under_a_low_file_limit_is_refused_not_emfile(deployment_dir: Path) -> None:
    """With a hard RLIMIT_NOFILE of 1024 the server lowers its per-listener cap to fit; 700 idle
    connections then meet prompt 503s instead of EMFILE on accept (which took /healthz down and
    logged a traceback per attempt before)."""
    import resource

    https, http = free_port(), free_port()
    log = deployment_dir / f"server-emfile-{http}.log"
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"} | LIMITS_ENV
    env["IKEPKI_LISTENER_MAX_CONNECTIONS"] = "1000"
    # the idle ones outlive opening all 700 on a loaded machine; one process: the limit is per process
    # (with several workers the kernel spreads the 700 unevenly, and one may stay under its cap)
    env["IKEPKI_LISTENER_HEADER_TIMEOUT_SECONDS"] = "8"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen([IKEPKI, "serve", "--dir", str(deployment_dir), "--https-port", str(https),
                             "--http-port", str(http), "--no-workers", "--workers", "1"], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, env=env, preexec_fn=low_limit, start_new_session=True)
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while hostile.healthz("127.0.0.1", http, False) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        idle = hostile.open_idle("127.0.0.1", http, 700)
        assert hostile.healthz("127.0.0.1", http, False, timeout=10) == 503  # the cap answers, no EMFILE
        assert _fds(proc.pid) < 1024 - 64
        assert _wait_for(lambda: hostile.healthz("127.0.0.1", http, False) == 200, 20)
        text = log.read_text()
        assert "Too many open files" not in text and len(text) < 16 * 1024, text[-2000:]
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
