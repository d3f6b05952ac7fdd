"""A minimal OpenID Provider stand-in for unit tests of token verification: discovery + JWKS over
real HTTP on loopback, keys we hold so tests can sign any (bad) token they need."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class KeyServer:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.keys: dict[str, Any] = {"rsa-1": self.rsa, "ec-1": self.ec}
        self.jwks_hits = 0
        # the token endpoint (authorization code redemption): what it answers, what it was sent
        self.token_answer: tuple[int, dict[str, Any]] = (400, {"error": "invalid_grant"})
        self.token_requests: list[tuple[dict[str, str], str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": server.issuer, "jwks_uri": server.issuer + "/jwks",
                            "authorization_endpoint": server.issuer + "/auth",
                            "token_endpoint": server.issuer + "/token"}
                elif self.path == "/jwks":
                    server.jwks_hits += 1
                    body = {"keys": server.jwks()}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path != "/token":
                    self.send_response(404)
                    self.end_headers()
                    return
                length = int(self.headers.get("content-length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                server.token_requests.append((form, self.headers.get("authorization")))
                status, answer = server.token_answer
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def jwks(self) -> list[dict[str, Any]]:
        out = []
        for kid, key in self.keys.items():
            alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
            algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
            jwk = json.loads(algo.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return out

    def sign(self, claims: dict[str, Any], kid: str = "rsa-1", alg: str | None = None,
             headers: dict[str, Any] | None = None) -> str:
        key = self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, **(headers or {})})

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.issuer, "aud": "ikepki-vpn", "sub": "alice", "iat": now, "exp": now + 300,
                "email": "alice@example.test", "email_verified": True, "groups": ["vpn-staff"], **over}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
