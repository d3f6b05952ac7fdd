"""ACME throughput: completed orders/s (new order, http-01, finalize, download) with N concurrent
clients, ikepki vs Debian's pebble, in the same run and with the same client (certbot's ``acme``).

    .venv/bin/python bench/acme.py [--clients 4] [--seconds 20] [--json out.json]

Both servers validate http-01 for real against one local responder; pebble runs with
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 (no authorization reuse, so
every order validates) and pebble-challtestsrv as DNS; ikepki runs without EAB and rate limits,
SQLite + SoftHSM (every certificate signed in the HSM). Servers and clients share the machine:
compare the ratio, not absolute numbers (see /work/shared/notes/performance-baselines.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# this file is called acme.py: keep its directory off sys.path so ``import acme`` finds the library
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402
import josepy as jose  # noqa: E402
from acme import challenges, client, messages  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IKEPKI = str(Path(sys.executable).with_name("ikepki"))
TOKENS: dict[str, str] = {}
POLL = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Responder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = TOKENS.get(self.path.rsplit("/", 1)[-1], "").encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Target:
    name: str
    directory: str
    ca_bundle: str
    domain: str
    procs: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def wait_url(url: str, verify: str, deadline: float = 120) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if httpx.get(url, verify=verify, timeout=2).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_ikepki(work: Path, http_port: int) -> Target:
    d = work / "ikepki"
    d.mkdir()
    (d / "ikepki.yaml").write_text(
        "acme:\n  external_account_required: false\n  rate_limit_per_account: 0\n  rate_limit_per_ip: 0\n"
        f"  http01_port: {http_port}\n  validation_hosts: '*.test=127.0.0.1'\n")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    subprocess.run([IKEPKI, "init", "--dir", str(d)], check=True, env=env, capture_output=True)
    port = free_port()
    log = (d / "serve.log").open("wb")
    proc = subprocess.Popen([IKEPKI, "serve", "--dir", str(d), "--https-port", str(port), "--http-port",
                             str(free_port()), "--no-workers"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"https://127.0.0.1:{port}/acme/directory"
    wait_url(url, str(d / "root-ca.pem"))
    return Target("ikepki", url, str(d / "root-ca.pem"), "bench.test", [proc])


def _tls_files(d: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench pebble TLS root")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "tlsca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "localhost.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (d / "localhost.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))


def start_pebble(work: Path, http_port: int) -> Target:
    d = work / "pebble"
    d.mkdir()
    _tls_files(d)
    port, dns, mgmt, cts_mgmt = free_port(), free_port(), free_port(), free_port()
    (d / "pebble-config.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{mgmt}",
        "certificate": str(d / "localhost.pem"), "privateKey": str(d / "localhost.key"), "httpPort": http_port,
        "tlsPort": free_port(), "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    cts = subprocess.Popen(["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01",
                            f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "", "-management",
                            f"127.0.0.1:{cts_mgmt}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    log = (d / "pebble.log").open("wb")
    peb = subprocess.Popen(["pebble", "-config", str(d / "pebble-config.json"), "-dnsserver", f"127.0.0.1:{dns}"],
                           env=env, stdout=log, stderr=subprocess.STDOUT, cwd=d)
    url = f"https://127.0.0.1:{port}/dir"
    wait_url(url, str(d / "tlsca.pem"))
    return Target("pebble", url, str(d / "tlsca.pem"), "bench.test", [cts, peb])


def one_order(cl: client.ClientV2, name: str) -> None:
    """newOrder, answer http-01, poll (20 ms steps, not the library's fixed 1 s sleeps), finalize, download."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    order = cl.new_order(csr)
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.response_and_validation(cl.net.key)
        TOKENS[challb.chall.encode("token")] = validation
        cl.answer_challenge(challb, response)
    for authz in order.authorizations:
        while (status := cl._post_as_get(authz.uri).json()["status"]) in ("pending", "processing"):
            time.sleep(POLL)
        if status != "valid":
            raise RuntimeError(f"authorization {status}")
    body = cl.begin_finalization(order).body
    while body.status != messages.STATUS_VALID:
        if body.status == messages.STATUS_INVALID:
            raise RuntimeError(f"order invalid: {body.error}")
        time.sleep(POLL)
        body = messages.Order.from_json(cl._post_as_get(order.uri).json())
    assert body.certificate is not None
    assert "BEGIN CERTIFICATE" in cl._post_as_get(body.certificate).text


def new_client(target: Target) -> client.ClientV2:
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=target.ca_bundle, user_agent="ikepki-bench")
    cl = client.ClientV2(client.ClientV2.get_directory(target.directory, net), net)
    regr = cl.new_account(messages.NewRegistration.from_data(email="bench@example.test",
                                                             terms_of_service_agreed=True))
    net.account = regr
    return cl


def measure(target: Target, clients: int, seconds: float) -> dict[str, Any]:
    """Orders completed per second with ``clients`` threads, each with its own account."""
    accounts = [new_client(target) for _ in range(clients)]
    one_order(accounts[0], f"warmup.{target.domain}")
    done, errors, lat = [0] * clients, [0] * clients, [[] for _ in range(clients)]  # type: list[list[float]]
    stop_at = time.monotonic() + seconds

    def worker(i: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            t0 = time.perf_counter()
            try:
                one_order(accounts[i], f"c{i}-{n}-{os.getpid()}.{target.domain}")
                done[i] += 1
                lat[i].append(time.perf_counter() - t0)
            except Exception as exc:
                errors[i] += 1
                if errors[i] == 1:
                    print(f"  {target.name} client {i}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    lats = sorted(x for xs in lat for x in xs)
    for cl in accounts:
        cl.net.session.close()
    return {"server": target.name, "clients": clients, "orders": sum(done), "errors": sum(errors),
            "seconds": round(elapsed, 2), "orders_per_s": round(sum(done) / elapsed, 2),
            "p50_ms": round(lats[len(lats) // 2] * 1000, 1) if lats else None,
            "p95_ms": round(lats[int(len(lats) * 0.95)] * 1000, 1) if lats else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for binary in ("pebble", "pebble-challtestsrv"):
        if shutil.which(binary) is None:
            sys.exit(f"{binary} is not installed (apt-get install pebble)")
    http_port = free_port()
    responder = ThreadingHTTPServer(("127.0.0.1", http_port), Responder)
    threading.Thread(target=responder.serve_forever, daemon=True).start()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="acme-bench-") as tmp:
        targets: list[Target] = []
        try:
            targets = [start_ikepki(Path(tmp), http_port), start_pebble(Path(tmp), http_port)]
            for n in args.clients:
                for target in targets:  # interleaved, same conditions
                    rows.append(measure(target, n, args.seconds))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            for target in targets:
                target.stop()
            responder.shutdown()
    print(f"\n{'clients':>7} {'ikepki orders/s':>16} {'pebble orders/s':>16} {'ratio ikepki/pebble':>20}")
    for n in args.clients:
        ik = next(r for r in rows if r["server"] == "ikepki" and r["clients"] == n)
        pb = next(r for r in rows if r["server"] == "pebble" and r["clients"] == n)
        ratio = ik["orders_per_s"] / pb["orders_per_s"] if pb["orders_per_s"] else float("nan")
        print(f"{n:>7} {ik['orders_per_s']:>16} {pb['orders_per_s']:>16} {ratio:>20.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
