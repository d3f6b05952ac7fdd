"""Helpers for the ACME tests: server handle, a raw JWS client for negative tests, cert checks."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

_spec = importlib.util.spec_from_file_location("ikepki_root_conftest", Path(__file__).parent.parent / "conftest.py")
assert _spec and _spec.loader
root_conftest = importlib.util.module_from_spec(_spec)
sys.modules["ikepki_root_conftest"] = root_conftest
_spec.loader.exec_module(root_conftest)
start_server = root_conftest.start_server
run_ikepki = root_conftest.run_ikepki
free_port = root_conftest.free_port
require_binary = root_conftest.require_binary

Server = root_conftest.Server
DNS_PORT = free_port()  # where a test's pebble-challtestsrv answers DNS (dns-01)


def acme_env(http01_port: int, tlsalpn_port: int, **extra: str) -> dict[str, str]:
    env = {"IKEPKI_ACME_DNS_RESOLVER": f"127.0.0.1:{DNS_PORT}", "IKEPKI_ACME_HTTP01_PORT": str(http01_port),
           "IKEPKI_ACME_TLSALPN01_PORT": str(tlsalpn_port), "IKEPKI_ACME_VALIDATION_HOSTS": "*.test=127.0.0.1",
           "IKEPKI_ACME_VALIDATION_TIMEOUT": "5"}
    env.update(extra)
    return env


def stop_quickly(srv: Server) -> None:
    """SIGTERM, then SIGKILL after 3 s: uvicorn waits for TLS close_notify on idle keep-alive
    connections a client library left open (requests pools), which would cost 10 s per module."""
    srv.process.send_signal(signal.SIGTERM)
    try:
        srv.process.wait(3)
    except subprocess.TimeoutExpired:
        srv.process.kill()
        srv.process.wait(5)


IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
NS = "urn:ietf:params:acme:error:"
PROFILE_EKUS = {"machine": {IPSEC_IKE, ExtendedKeyUsageOID.CLIENT_AUTH},
                "gateway": {IPSEC_IKE, ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}}
PROFILE_LIFETIME = {"machine": timedelta(hours=24), "gateway": timedelta(days=30)}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Eab:
    kid: str
    hmac_key: str


@dataclass
class AcmeServer:
    server: Any  # tests.conftest.Server
    http01_port: int
    tlsalpn_port: int

    @property
    def directory(self) -> str:
        return f"{self.server.https_url}/acme/directory"

    @property
    def base(self) -> str:
        return f"{self.server.https_url}/acme"

    @property
    def root_pem(self) -> Path:
        return Path(self.server.root_pem)

    @property
    def dir(self) -> Path:
        return Path(self.server.dir)

    def issuing_ca(self, tmp: Path) -> Path:
        path = tmp / "issuing-ca.pem"
        path.write_bytes((self.dir / "ca" / "ec.pem").read_bytes())
        return path

    def eab(self, profile: str = "machine", identifiers: str = "*.test", single_use: bool = False,
            expires: datetime | None = None) -> Eab:
        """An EAB key written straight into the deployment's database (fast; the CLI has its own test)."""
        import secrets

        from ca.store.db import Database
        from enrollment.acme.store import AcmeStore

        kid, key = "eab-t-" + secrets.token_urlsafe(9), secrets.token_bytes(32)
        db = Database(f"sqlite:///{self.dir / 'ikepki.db'}")
        try:
            AcmeStore(db).add_eab_key(kid, key, profile, identifiers.split(","), expires, single_use,
                                      datetime.now(UTC))
        finally:
            db.dispose()
        return Eab(kid, b64u(key))

    def eab_cli(self, profile: str = "machine", identifiers: str = "*.test", *extra: str) -> Eab:
        out = run_ikepki("acme", "eab", "create", "--profile", profile, "--identifiers", identifiers, "--json",
                         *extra, directory=self.dir)
        data = json.loads(out.stdout)
        return Eab(data["kid"], data["hmac_key"])

    def client(self) -> httpx.Client:
        return httpx.Client(verify=str(self.root_pem), timeout=30)


def verify_certificate(pem_chain: bytes, server: AcmeServer, tmp: Path, names: set[str],
                       profile: str = "machine") -> x509.Certificate:
    """openssl verify against the root + issuing CA; profile EKUs, lifetime and names."""
    leaf_pem = pem_chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    leaf_path = tmp / "leaf-check.pem"
    leaf_path.write_bytes(leaf_pem)
    proc = subprocess.run(["openssl", "verify", "-CAfile", str(server.root_pem), "-untrusted",
                           str(server.issuing_ca(tmp)), str(leaf_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cert = x509.load_pem_x509_certificate(leaf_pem)
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == PROFILE_EKUS[profile]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert PROFILE_LIFETIME[profile] <= lifetime <= PROFILE_LIFETIME[profile] + timedelta(minutes=2)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(v) for v in sans.get_values_for_type(x509.DNSName)} | \
        {str(v) for v in sans.get_values_for_type(x509.IPAddress)} == names
    return cert


# -- a raw JWS client for protocol-level tests ------------------------------------------------------

def jwk_of(key: Any) -> dict[str, str]:
    pub = key.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        n = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[pub.curve.name]
        return {"kty": "EC", "crv": crv, "x": b64u(n.x.to_bytes(size, "big")), "y": b64u(n.y.to_bytes(size, "big"))}
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        return {"kty": "RSA", "n": b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                "e": b64u(n.e.to_bytes((n.e.bit_length() + 7) // 8, "big"))}
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}


def thumbprint(jwk: dict[str, str]) -> str:
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    return b64u(hashlib.sha256(json.dumps({k: jwk[k] for k in members}, separators=(",", ":"),
                                          sort_keys=True).encode()).digest())


def alg_of(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256" if key.curve.key_size == 256 else "ES384"
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "EdDSA"


def sign(key: Any, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256() if size == 32 else hashes.SHA384())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.sign(data)


def jws(key: Any, url: str, payload: Any, *, nonce: str | None, kid: str | None = None,
        extra: dict[str, Any] | None = None, alg: str | None = None) -> dict[str, str]:
    protected: dict[str, Any] = {"alg": alg or alg_of(key), "url": url}
    if nonce is not None:
        protected["nonce"] = nonce
    if kid:
        protected["kid"] = kid
    else:
        protected["jwk"] = jwk_of(key)
    protected.update(extra or {})
    p64 = b64u(json.dumps(protected).encode())
    body64 = "" if payload is None else b64u(json.dumps(payload).encode())
    return {"protected": p64, "payload": body64, "signature": b64u(sign(key, f"{p64}.{body64}".encode()))}


def eab_binding(eab: Eab, key: Any, url: str, mac_key: bytes | None = None) -> dict[str, str]:
    import hmac
    p64 = b64u(json.dumps({"alg": "HS256", "kid": eab.kid, "url": url}).encode())
    body64 = b64u(json.dumps(jwk_of(key)).encode())
    secret = mac_key if mac_key is not None else base64.urlsafe_b64decode(eab.hmac_key + "=" * (-len(eab.hmac_key) % 4))
    mac = hmac.new(secret, f"{p64}.{body64}".encode(), hashlib.sha256).digest()
    return {"protected": p64, "payload": body64, "signature": b64u(mac)}


class RawClient:
    """Speaks ACME with hand-built JWS so tests can break every field on purpose."""

    def __init__(self, server: AcmeServer, key: Any | None = None) -> None:
        self.server = server
        self.http = server.client()
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.kid: str | None = None
        self.dir = self.http.get(server.directory).json()

    def nonce(self) -> str:
        return self.http.head(self.dir["newNonce"]).headers["Replay-Nonce"]

    def post(self, url: str, payload: Any, *, body: Any = None, content_type: str = "application/jose+json",
             **kw: Any) -> httpx.Response:
        if body is None:
            kw.setdefault("nonce", self.nonce())
            kw.setdefault("kid", self.kid)
            body = jws(kw.pop("key", self.key), url, payload, **kw)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(url, content=data, headers={"Content-Type": content_type})

    def register(self, eab: Eab | None) -> httpx.Response:
        url = self.dir["newAccount"]
        payload: dict[str, Any] = {"termsOfServiceAgreed": True, "contact": ["mailto:t@example.test"]}
        if eab:
            payload["externalAccountBinding"] = eab_binding(eab, self.key, url)
        resp = self.post(url, payload, kid=None)
        if resp.status_code in (200, 201):
            self.kid = resp.headers["Location"]
        return resp


def problem_type(resp: httpx.Response) -> str:
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.text
    return str(resp.json()["type"]).removeprefix(NS)


# -- an http-01 responder for tests that drive the acme library -------------------------------------

class Http01Responder:
    """Serves /.well-known/acme-challenge/<token> on ``host:port`` (127.0.0.1 unless the CA validates
    from elsewhere, e.g. containers on podman's bridge)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.tokens: dict[str, str] = {}
        tokens = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                body = tokens.get(token, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Http01Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def acme_lib_enroll(directory_url: str, verify: str, eab: tuple[str, str], tokens: dict[str, str], name: str, *,
                    user_agent: str) -> x509.Certificate:
    """Certbot's ``acme`` library as an independent client: a new ES256 account bound to the EAB
    ``(kid, hmac_key)`` (RFC 8555 §7.3.4), one order for ``name``, its http-01 challenges answered
    through ``tokens`` (an :class:`Http01Responder`'s), finalized with a fresh P-256 key; the leaf."""
    import josepy as jose
    from acme import challenges, client, messages

    kid, hmac_key = eab
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=verify,  # type: ignore[arg-type]
                               user_agent=user_agent)
    cl = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
    binding = messages.ExternalAccountBinding.from_data(account_public_key=key.public_key(), kid=kid,
                                                        hmac_key=hmac_key, directory=cl.directory)
    net.account = cl.new_account(messages.NewRegistration.from_data(
        email="chart@example.test", terms_of_service_agreed=True, external_account_binding=binding))
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    order = cl.new_order(csr)
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.response_and_validation(cl.net.key)
        tokens[challb.chall.encode("token")] = validation
        cl.answer_challenge(challb, response)
    done = cl.poll_and_finalize(order, datetime.now() + timedelta(seconds=90))
    return x509.load_pem_x509_certificate(done.fullchain_pem.encode())


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
