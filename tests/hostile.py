"""Hostile HTTP clients, one function per probe, each taking ``(host, port, tls)`` and returning
what the listener did (:class:`Outcome`): the status it answered (if any) and how long it kept the
connection open. Probes never wait longer than ``PROBE_SECONDS`` so a listener without limits
shows up as ``held`` rather than hanging the test run.

Used by tests/core/test_hostile_listeners.py against every listener (``ikepki serve`` HTTPS and
HTTP, ``ikepki ocsp serve``, the responder's push listener); reuse them for new listeners.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

PROBE_SECONDS = 6.0  # longer than any limit the tests configure, far shorter than "no limit"
TICK = 0.2


@dataclass(frozen=True)
class Outcome:
    status: int | None  # HTTP status the listener answered, None if it only closed (or never did)
    seconds: float  # how long until the listener closed the connection (or gave up waiting)
    closed: bool  # the listener closed the connection within PROBE_SECONDS

    @property
    def held(self) -> bool:
        return not self.closed


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # probes test the listener, not its certificate
    return ctx


def connect(host: str, port: int, tls: bool, timeout: float = 5) -> socket.socket:
    raw = socket.create_connection((host, port), timeout=timeout)
    if not tls:
        return raw
    return _client_context().wrap_socket(raw, server_hostname=host)


def _status(data: bytes) -> int | None:
    if data.startswith(b"HTTP/1.") and len(data) >= 12 and data[9:12].isdigit():
        return int(data[9:12])
    return None


def _drain(sock: socket.socket, start: float) -> Outcome:
    """Read until the listener closes (or PROBE_SECONDS from ``start`` pass)."""
    data = b""
    while True:
        left = PROBE_SECONDS - (time.monotonic() - start)
        if left <= 0:
            return Outcome(_status(data), time.monotonic() - start, False)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return Outcome(_status(data), time.monotonic() - start, True)
        if not chunk:
            return Outcome(_status(data), time.monotonic() - start, True)
        data += chunk


def _trickle(sock: socket.socket, start: float, first: bytes, byte: bytes) -> Outcome:
    """Send ``first``, then one ``byte`` per TICK until the listener answers or closes."""
    data = b""
    try:
        sock.sendall(first)
        while time.monotonic() - start < PROBE_SECONDS:
            sock.settimeout(TICK)
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    return Outcome(_status(data), time.monotonic() - start, True)
                data += chunk
                continue
            except TimeoutError:
                pass
            sock.sendall(byte)
    except (ConnectionError, ssl.SSLError, OSError):
        return Outcome(_status(data), time.monotonic() - start, True)
    return Outcome(_status(data), time.monotonic() - start, False)


def _send_then_drain(host: str, port: int, tls: bool, payload: bytes) -> Outcome:
    start = time.monotonic()
    with connect(host, port, tls) as sock:
        try:
            for i in range(0, len(payload), 65536):
                sock.sendall(payload[i:i + 65536])
        except (ConnectionError, ssl.SSLError, OSError):
            pass  # closed while we were still sending: read what it said
        return _drain(sock, start)


# -- probes -----------------------------------------------------------------------------------

def slow_headers(host: str, port: int, tls: bool) -> Outcome:
    """Slowloris: a request line, then one header byte per tick, never finishing the headers."""
    start = time.monotonic()
    with connect(host, port, tls) as sock:
        return _trickle(sock, start, b"GET /healthz HTTP/1.1\r\nHost: probe\r\nX-Slow: ", b"a")


def trickled_body(host: str, port: int, tls: bool) -> Outcome:
    """Complete headers announcing 10 kB, then the body one byte per tick."""
    start = time.monotonic()
    with connect(host, port, tls) as sock:
        head = (b"POST /ocsp HTTP/1.1\r\nHost: probe\r\nContent-Type: application/ocsp-request\r\n"
                b"Content-Length: 10000\r\n\r\n")
        return _trickle(sock, start, head, b"\x30")


def idle_tcp(host: str, port: int, tls: bool) -> Outcome:
    """Connect (TLS: complete the handshake) and send nothing."""
    start = time.monotonic()
    with connect(host, port, tls) as sock:
        return _drain(sock, start)


def stalled_tls_handshake(host: str, port: int, tls: bool) -> Outcome:
    """TCP connect and send half a TLS ClientHello record header, then nothing (plain HTTP
    listeners see an incomplete request line)."""
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x02")
        return _drain(sock, start)


def oversized_headers(host: str, port: int, tls: bool) -> Outcome:
    """One 4 MB header field."""
    return _send_then_drain(host, port, tls, b"GET /healthz HTTP/1.1\r\nHost: probe\r\nX-Big: "
                            + b"a" * (4 << 20) + b"\r\n\r\n")


def many_headers(host: str, port: int, tls: bool) -> Outcome:
    """5,000 small header fields (a header-count flood within a moderate size)."""
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(5000))
    return _send_then_drain(host, port, tls, b"GET /healthz HTTP/1.1\r\nHost: probe\r\n" + fields + b"\r\n")


def oversized_body(host: str, port: int, tls: bool) -> Outcome:
    """A POST declaring 1 GB, then 2 MB of it."""
    head = b"POST /ocsp HTTP/1.1\r\nHost: probe\r\nContent-Type: application/ocsp-request\r\nContent-Length: %d\r\n\r\n"
    return _send_then_drain(host, port, tls, head % (1 << 30) + os.urandom(2 << 20))


def chunked_flood(host: str, port: int, tls: bool) -> Outcome:
    """A chunked POST (no declared length) streaming 8 MB."""
    chunk = b"10000\r\n" + b"\x00" * 0x10000 + b"\r\n"
    head = (b"POST /ocsp HTTP/1.1\r\nHost: probe\r\nContent-Type: application/ocsp-request\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    return _send_then_drain(host, port, tls, head + chunk * 128 + b"0\r\n\r\n")


def parameter_flood(host: str, port: int, tls: bool) -> Outcome:
    """A query string of 3,000 parameters (~25 kB) on a short path."""
    query = "&".join(f"p{i}={i}" for i in range(3000)).encode()
    return _send_then_drain(host, port, tls, b"GET /healthz?" + query + b" HTTP/1.1\r\nHost: probe\r\n\r\n")


def long_url(host: str, port: int, tls: bool) -> Outcome:
    """A 200 kB request target."""
    return _send_then_drain(host, port, tls, b"GET /healthz?" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: probe\r\n\r\n")


def random_bytes(host: str, port: int, tls: bool) -> Outcome:
    """64 kB of random bytes instead of HTTP."""
    return _send_then_drain(host, port, tls, os.urandom(64 * 1024))


PROBES: dict[str, Callable[[str, int, bool], Outcome]] = {
    f.__name__: f for f in (slow_headers, trickled_body, idle_tcp, stalled_tls_handshake, oversized_headers,
                            many_headers, oversized_body, chunked_flood, parameter_flood, long_url, random_bytes)
}


def healthz(host: str, port: int, tls: bool, timeout: float = 2.0) -> int | None:
    """GET /healthz on a fresh connection: the status, or None if no answer within ``timeout``."""
    start = time.monotonic()
    try:
        with connect(host, port, tls, timeout) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data and time.monotonic() - start < timeout:
                sock.settimeout(max(0.01, timeout - (time.monotonic() - start)))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return _status(data)
    except (OSError, ssl.SSLError):
        return None


def open_idle(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` plain TCP connections that send nothing (the caller closes them)."""
    return [socket.create_connection((host, port), timeout=5) for _ in range(n)]
