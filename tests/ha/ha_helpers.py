"""Helpers for the HA tests: EST enrollment, OCSP over HTTP, a counting webhook gateway, a
round-robin "load balancer" for the acme library, and reading the shared store directly."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import bindparam, create_engine, text

from enrollment.est.wire import certs_from_certs_only
from tests.acme.acme_helpers import Http01Responder
from tests.conftest import Server


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


# -- EST ------------------------------------------------------------------------------------------

def csr_der(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{cn}.example.test")]), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def est_client(server: Server) -> httpx.Client:
    return httpx.Client(verify=str(server.root_pem), timeout=60)


def est_enroll(client: httpx.Client, server: Server, cn: str, auth: tuple[str, str]) -> httpx.Response:
    return est_post(client, server, csr_der(cn), auth)


def est_post(client: httpx.Client, server: Server, csr: bytes, auth: tuple[str, str],
             label: str | None = None) -> httpx.Response:
    path = f"/.well-known/est/{label}/simpleenroll" if label else "/.well-known/est/simpleenroll"
    return client.post(f"{server.https_url}{path}", content=base64.b64encode(csr), auth=auth,
                       headers={"Content-Type": "application/pkcs10"})


def est_cert(response: httpx.Response) -> x509.Certificate:
    assert response.status_code == 200, (response.status_code, response.text)
    (cert,) = certs_from_certs_only(base64.b64decode(response.content))
    return cert


def admin(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    with server.client() as c:
        return c.request(method, f"{server.https_url}/admin/v1{path}",
                         headers={"Authorization": f"Bearer {server.admin_token()}"}, **kw)


def revoke(server: Server, serial: int, reason: str = "keyCompromise") -> httpx.Response:
    return admin(server, "POST", "/revocations", json={"serials": [format(serial, "x")], "reason": reason})


# -- OCSP -----------------------------------------------------------------------------------------

def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A nonce-less request (SHA-1 CertID, as strongSwan and openssl send by default)."""
    return (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
            .public_bytes(serialization.Encoding.DER))


def ocsp_post(base_url: str, request: bytes) -> ocsp.OCSPResponse:
    r = httpx.post(f"{base_url}/ocsp", content=request, headers={"Content-Type": "application/ocsp-request"},
                   timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/ocsp-response", r.text
    return ocsp.load_der_ocsp_response(r.content)


# -- the shared store -----------------------------------------------------------------------------

class Store:
    """Reads the replicas' PostgreSQL database from outside (no HSM, no ikepki code)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_size=2)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        stmt = text(sql)
        for name, value in params.items():
            if isinstance(value, list | tuple | set | frozenset):
                stmt = stmt.bindparams(bindparam(name, expanding=True))
                params[name] = list(value)
        with self.engine.connect() as conn:
            return list(conn.execute(stmt, params))

    def certificates(self, serials: Iterable[int]) -> dict[int, tuple[str, bytes]]:
        """serial -> (status, DER) for the serials found."""
        hexes = [format(s, "x") for s in serials]
        out: dict[int, tuple[str, bytes]] = {}
        for i in range(0, len(hexes), 500):
            for r in self.rows("select serial, status, der from certificates where serial in :s", s=hexes[i:i + 500]):
                out[int(r.serial, 16)] = (r.status, bytes(r.der))
        return out

    def close(self) -> None:
        self.engine.dispose()


# -- a webhook gateway that counts deliveries per event id -----------------------------------------

class CountingWebhook:
    """POST / -> 200; counts the ``x-ikepki-event-id`` of each delivery (the JWS is not checked here:
    the push component's own tests verify it)."""

    def __init__(self, port: int) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                with outer.lock:
                    outer.counts[self.headers.get("x-ikepki-event-id", "")] += 1
                body = b'{"terminated_sas": 0}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- a round-robin load balancer in front of the acme library's requests session -------------------

class RoundRobinAdapter(requests.adapters.HTTPAdapter):
    """Sends each request to the next replica's port while keeping URL and Host header of the
    first replica, as an L4 load balancer in front of identical replicas would. Records the
    replica that answered and every ACME problem type seen (the acme library retries a badNonce
    once on its own, which would hide it)."""

    def __init__(self, front_port: int, ports: list[int]) -> None:
        super().__init__()
        self.front_port = front_port
        self.ports = ports
        self._next = count()
        self.served: Counter[int] = Counter()
        self.problems: list[str] = []
        self.nonce_origin: dict[str, int] = {}
        self.cross_redeemed = 0

    def send(self, request: requests.PreparedRequest, **kw: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        port = self.ports[next(self._next) % len(self.ports)]
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
        used = _jws_nonce(request.body)
        if used is not None and used in self.nonce_origin and self.nonce_origin[used] != port:
            self.cross_redeemed += 1
        response = super().send(request, **kw)
        self.served[port] += 1
        if nonce := response.headers.get("Replay-Nonce"):
            self.nonce_origin[nonce] = port
        if response.headers.get("Content-Type", "").startswith("application/problem+json"):
            self.problems.append(str(response.json().get("type")))
        return response


def _jws_nonce(body: Any) -> str | None:
    import json

    if not body:
        return None
    try:
        protected = json.loads(body)["protected"]
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        return str(header.get("nonce")) if header.get("nonce") else None
    except (ValueError, KeyError, TypeError):
        return None


class BarrierHttp01Responder(Http01Responder):
    """http-01 responder that answers nothing until ``parties`` validation requests are waiting, so
    the server finishes that many challenges at the same moment (then answers at once)."""

    def __init__(self, port: int, parties: int) -> None:
        super().__init__(port)
        barrier = threading.Barrier(parties, timeout=20)
        inner = self.httpd.RequestHandlerClass

        class Held(inner):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()
                super().do_GET()

        self.httpd.RequestHandlerClass = Held


def create_eab(url: str, profile: str = "machine", identifiers: str = "*.test") -> tuple[str, str]:
    """(kid, base64url HMAC key): what `ikepki acme eab create` stores, written straight to the shared
    database (the CLI would open the HSM just to check the profile, ~10 s per call on a loaded box)."""
    import datetime
    import secrets

    from ca.store.db import Database
    from enrollment.acme.cli import parse_patterns
    from enrollment.acme.jws import b64e
    from enrollment.acme.store import AcmeStore

    db = Database(url)
    try:
        kid, key = "eab-" + secrets.token_urlsafe(12), secrets.token_bytes(32)
        AcmeStore(db).add_eab_key(kid, key, profile, parse_patterns(identifiers), None, False,
                                  datetime.datetime.now(datetime.UTC))
    finally:
        db.dispose()
    return kid, b64e(key)
