"""A tiny OCSP responder (RFC 6960) for tests: HTTP POST, answers signed by the issuing CA."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from gw_pki import Issued


@dataclass
class OcspServer:
    issuer: Issued
    certs: dict[int, x509.Certificate] = field(default_factory=dict)
    revoked: set[int] = field(default_factory=set)
    requests: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def answer(self, der: bytes) -> bytes:
        self.requests += 1
        req = ocsp.load_der_ocsp_request(der)
        cert = self.certs.get(req.serial_number)
        if cert is None:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
                serialization.Encoding.DER)
        now = datetime.now(UTC)
        status = ocsp.OCSPCertStatus.REVOKED if cert.serial_number in self.revoked else ocsp.OCSPCertStatus.GOOD
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=self.issuer.cert, algorithm=hashes.SHA1(), cert_status=status,
            this_update=now - timedelta(minutes=1), next_update=now + timedelta(seconds=2),
            revocation_time=now - timedelta(minutes=1) if status == ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=x509.ReasonFlags.key_compromise if status == ocsp.OCSPCertStatus.REVOKED else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, self.issuer.cert)
        return b.sign(self.issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                data = outer.answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
