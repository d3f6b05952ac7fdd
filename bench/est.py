"""EST simpleenroll throughput end to end: concurrent HTTPS clients -> ikepki serve -> Authority
(SoftHSM P-256 issuing CA, SQLite WAL) -> certs-only PKCS#7 back.

Run: .venv/bin/python bench/est.py [--requests 300] [--concurrency 1,4,16]

Printed alongside (same run, same machine; compare ratios, not absolute numbers):
- peer "transport": GET /.well-known/est/cacerts over the same TLS connections (the HTTP+TLS ceiling);
- peer "in-process": Authority.issue() called directly in one process (crypto + DB ceiling, no HTTP);
- the parts of one in-process issuance: CSR parse+verify, HSM signature, a full issue.
Server CPU seconds per certificate show whether the server process is CPU-bound.
After the pipeline rows: one row with one-time device secrets (HTTP Basic, device id + secret), then
``simplereenroll`` rows with the certificates those devices got (TLS client authentication, RFC 7030
§4.2.2), which is what an MDM does once a device has its first certificate.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
IKEPKI = str(Path(sys.executable).with_name("ikepki"))
PASSWORD = "bench-pipeline-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_csrs(n: int, keys: list[Any] | None = None, names: list[int] | None = None) -> list[bytes]:
    """``n`` CSRs (fresh P-256 keys, appended to ``keys`` if given) for bench-<i>, or bench-<names[i]>."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        if keys is not None:
            keys.append(key)
        name = names[i] if names else i
        out.append(x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{name}")]))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"bench-{name}.example.test")]), False)
                   .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live children: the worker processes of
    ``ikepki serve --workers N`` (a worker replaced mid-run would lose its share: none are)."""
    total = 0.0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if entry.name == str(pid) or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def client_context(root: str, pkcs7_b64: bytes, key: Any, stem: Path) -> ssl.SSLContext:
    """A TLS context presenting the certificate of an EST answer (certs-only PKCS#7, base64) and its key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(pkcs7_b64))
    leaf = next(c for c in certs if c.public_key() == key.public_key())
    cert_file, key_file = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                   for c in [leaf, *[c for c in certs if c is not leaf]]))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(cafile=root)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def init(directory: Path) -> None:
    from enrollment.est.auth import hash_password

    directory.mkdir(parents=True)
    (directory / "ikepki.yaml").write_text(
        "est:\n  pipelines:\n    bench:\n      password_hash: \"" + hash_password(PASSWORD) + "\"\n")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    subprocess.run([IKEPKI, "init", "--dir", str(directory)], check=True, capture_output=True, env=env)


def serve(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    proc = subprocess.Popen([IKEPKI, "serve", "--dir", str(directory), "--https-port", str(port), "--http-port",
                             str(http_port), "--no-workers"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def register_devices(url: str, root: str, directory: Path, n: int, tag: str) -> list[tuple[str, str]]:
    """Bulk MDM registration (one admin API call); returns (device id, secret) pairs."""
    token = (directory / "admin-token").read_text().strip()
    devices = [{"device_id": f"{tag}-{i}", "profile": "machine", "sans": [f"DNS:bench-{i}.example.test"]}
               for i in range(n)]
    r = httpx.post(f"{url}/admin/v1/est/registrations", json={"devices": devices}, timeout=120,
                   headers={"Authorization": f"Bearer {token}"}, verify=ssl.create_default_context(cafile=root))
    r.raise_for_status()
    return [(d["device_id"], d["secret"]) for d in r.json()["registrations"]]


def run_load(url: str, root: str, bodies: list[bytes] | None, concurrency: int, total: int,
             creds: list[tuple[str, str]] | None = None, answers: dict[int, bytes] | None = None,
             client_certs: list[ssl.SSLContext] | None = None) -> tuple[float, int]:
    """``total`` requests spread over ``concurrency`` keep-alive clients; returns (seconds, failures).
    ``answers`` collects the response bodies by request index; with ``client_certs`` (one TLS
    context with a client certificate per client) client j sends the requests i with i % concurrency
    == j to ``simplereenroll`` (RFC 7030 §4.2.2: the certificate being renewed authenticates)."""
    ctx = ssl.create_default_context(cafile=root)
    clients = [httpx.Client(verify=client_certs[j] if client_certs else ctx, timeout=60)
               for j in range(concurrency)]
    for c in clients:
        c.get(f"{url}/.well-known/est/cacerts")  # TLS handshake outside the measurement
    counter = iter(range(total))
    lock = threading.Lock()
    failures = [0]
    mine = [iter(range(j, total, concurrency)) for j in range(concurrency)]

    def worker(j: int, client: httpx.Client) -> None:
        while True:
            if client_certs:
                i = next(mine[j], None)
            else:
                with lock:
                    i = next(counter, None)
            if i is None:
                return
            if bodies is None:
                r = client.get(f"{url}/.well-known/est/cacerts")
            elif client_certs:
                r = client.post(f"{url}/.well-known/est/simplereenroll", content=base64.b64encode(bodies[i]),
                                headers={"Content-Type": "application/pkcs10"})
            else:
                r = client.post(f"{url}/.well-known/est/simpleenroll", content=base64.b64encode(bodies[i]),
                                auth=creds[i] if creds else ("bench", PASSWORD),
                                headers={"Content-Type": "application/pkcs10"})
            if r.status_code != 200:
                with lock:
                    failures[0] += 1
                    if failures[0] == 1:
                        print(f"  first failure: HTTP {r.status_code} {r.text[:200]}", file=sys.stderr)
            elif answers is not None:
                answers[i] = r.content

    threads = [threading.Thread(target=worker, args=(j, c)) for j, c in enumerate(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    return elapsed, failures[0]


def in_process(directory: str, n: int) -> None:
    """Child process: the crypto + DB ceiling without HTTP (own SoftHSM session)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.csr import parse_csr
    from ca.deployment import Deployment
    from ca.model import IssuanceRequest, Requester

    os.environ["SOFTHSM2_CONF"] = str(Path(directory) / "softhsm2.conf")
    dep = Deployment.open(Path(directory))
    csrs = make_csrs(n)
    t0 = time.perf_counter()
    parsed = [parse_csr(c) for c in csrs]
    t_parse = time.perf_counter() - t0
    key = dep.issuers["ec"].key.key
    t0 = time.perf_counter()
    for _ in range(n):
        key.sign(b"x" * 300, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
    t_sign = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in parsed:
        dep.authority.issue(IssuanceRequest(p, "machine", Requester("bench", "bench")))
    t_issue = time.perf_counter() - t0
    print(json.dumps({"parse_per_s": n / t_parse, "hsm_sign_per_s": n / t_sign, "issue_per_s": n / t_issue}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--_inprocess", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._inprocess:
        in_process(args._inprocess[0], int(args._inprocess[1]))
        return
    levels = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="est-bench-") as tmp:
        directory = Path(tmp) / "ikepki"
        init(directory)
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        peer = json.loads(subprocess.run([sys.executable, __file__, "--_inprocess", str(directory),
                                          str(args.requests)], check=True, capture_output=True, text=True,
                                         env=env).stdout)
        proc, port = serve(directory)
        url, root = f"https://127.0.0.1:{port}", str(directory / "root-ca.pem")
        try:
            print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work on the machine skews "
                  "absolute numbers; compare the ratios)")
            print(f"in-process (no HTTP): CSR parse+verify {peer['parse_per_s']:.0f}/s, HSM P-256 sign "
                  f"{peer['hsm_sign_per_s']:.0f}/s, Authority.issue {peer['issue_per_s']:.0f}/s")
            print(f"{'clients':>7} {'enroll/s':>9} {'cacerts/s':>10} {'enroll/cacerts':>15} {'enroll/in-proc':>15} "
                  f"{'srv CPU ms/cert':>16} {'fail':>5}")
            for c in levels:
                bodies = make_csrs(args.requests)
                cpu0 = cpu_seconds(proc.pid)
                t_enroll, fails = run_load(url, root, bodies, c, args.requests)
                cpu = cpu_seconds(proc.pid) - cpu0
                t_get, fails_get = run_load(url, root, None, c, args.requests)
                enroll_rate, get_rate = args.requests / t_enroll, args.requests / t_get
                print(f"{c:>7} {enroll_rate:>9.0f} {get_rate:>10.0f} {enroll_rate / get_rate:>15.2f} "
                      f"{enroll_rate / peer['issue_per_s']:>15.2f} {1000 * cpu / args.requests:>16.1f} "
                      f"{fails + fails_get:>5}")
            c = levels[-1]
            creds = register_devices(url, root, directory, args.requests, "dev")
            keys: list[Any] = []
            answers: dict[int, bytes] = {}
            bodies = make_csrs(args.requests, keys)
            cpu0 = cpu_seconds(proc.pid)
            t_dev, fails = run_load(url, root, bodies, c, args.requests, creds, answers)
            cpu = cpu_seconds(proc.pid) - cpu0
            dev_rate = args.requests / t_dev
            print(f"{c:>7} {dev_rate:>9.0f} {'':>10} {'':>15} {dev_rate / peer['issue_per_s']:>15.2f}"
                  f" {1000 * cpu / args.requests:>16.1f} {fails:>5}  <- device secrets (claim + finalize per cert)")
            for c in levels:  # what an MDM does next: renew with the issued certificate (simplereenroll)
                devices = sorted(answers)[:c]
                tls = [client_context(root, answers[d], keys[d], Path(tmp) / f"dev-{d}") for d in devices]
                bodies = make_csrs(args.requests, names=[devices[i % c] for i in range(args.requests)])
                cpu0 = cpu_seconds(proc.pid)
                t_re, fails = run_load(url, root, bodies, c, args.requests, client_certs=tls)
                cpu = cpu_seconds(proc.pid) - cpu0
                re_rate = args.requests / t_re
                print(f"{c:>7} {re_rate:>9.0f} {'':>10} {'':>15} {re_rate / peer['issue_per_s']:>15.2f}"
                      f" {1000 * cpu / args.requests:>16.1f} {fails:>5}  <- simplereenroll with the device "
                      "certificate (TLS client auth)")
            print(f"(server CPU ms/cert x enroll/s / 1000 = server cores busy; this machine has {os.cpu_count()})")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
