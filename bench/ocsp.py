"""OCSP responder throughput: ikepki (`ikepki ocsp serve --workers N`, raw ASGI on uvicorn, N
processes (default: one per core), pre-signed responses from the HSM delegated signer; nonce
responses signed per request, batched onto each worker's token session) vs `openssl ocsp` (index.txt, signs every
response with a software key) vs `cfssl ocspserve` (pre-signed responses file), all on one CA
with 100,000 issued certificates (rows bulk-inserted into the store; 1 % revoked).

Same load for every peer, on 127.0.0.1 inside a private network namespace (`openssl ocsp` binds
all interfaces):
- ``ab -n N -c 64`` without keep-alive (one request per connection; `openssl ocsp` is HTTP/1.0
  and wedges under wrk, clients.md), with and without a nonce;
- ``wrk -t2 -c64`` with keep-alive rotating 1,000 distinct request bodies (ikepki, cfssl).

    .venv/bin/python bench/ocsp.py [--certs 100000] [--seconds 8] [--requests 20000] [--workers N]

Prints req/s and p99 per run and the ratios ikepki / peer. Needs root (netns), ab, wrk, cfssl.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from tests.conftest import IKEPKI, init_deployment_dir  # noqa: E402

SHA1_ALG = bytes.fromhex("300906052b0e03021a0500")
NETNS = f"ikp-bench-{os.getpid()}"
WRAP = ["ip", "netns", "exec", NETNS]


def bulk_ca(directory: Path, n: int) -> tuple[object, list[int], set[int]]:
    """Open the deployment in-process and insert ``n`` certificate rows for the ec issuer."""
    from ca.crl_entry import crl_entry_der
    from ca.deployment import Deployment

    os.environ["SOFTHSM2_CONF"] = str(directory / "softhsm2.conf")
    dep = Deployment.open(directory)
    now = datetime.now(UTC)
    ts, later = now.strftime("%Y-%m-%d %H:%M:%S.%f"), (now + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    serials = [int.from_bytes(os.urandom(20), "big") >> 1 for _ in range(n)]
    revoked = set(serials[::100])
    rows = [(format(s, "x"), "ec", "CN=bench", "[]", "machine", ts, later, "revoked" if s in revoked else "valid",
             ts if s in revoked else None, "keyCompromise" if s in revoked else None,
             crl_entry_der(s, now, 1) if s in revoked else None, b"x", "", "bench", ts) for s in serials]
    with dep.db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO certificates (serial, issuer_id, subject, sans, profile, not_before, not_after, status, "
            "revoked_at, revocation_reason, crl_entry_der, der, requester, channel, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return dep, serials, revoked


def software_responder(dep: object, out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A delegated OCSP signer with a software key (openssl and cfssl cannot use the HSM)."""
    from ca.deployment import issue_service_cert
    from ca.keys.signer import SigningKey
    from ca.model import Requester

    key = ec.generate_private_key(ec.SECP256R1())
    issued = issue_service_cert(dep, "ocsp-signer", "ec", SigningKey("software:bench", key),
                                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench OCSP")]),
                                Requester("bench", "ocsp"))
    (out / "responder.pem").write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    (out / "responder.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return issued.certificate, key


def request_der(name_hash: bytes, key_hash: bytes, serial: int, nonce: bool) -> bytes:
    from ca.der import der_integer, der_octets, der_oid, der_seq, explicit

    tbs = [der_seq(der_seq(der_seq(SHA1_ALG, der_octets(name_hash), der_octets(key_hash), der_integer(serial))))]
    if nonce:
        tbs.append(explicit(2, der_seq(der_seq(der_oid("1.3.6.1.5.5.7.48.1.2"), der_octets(der_octets(
            os.urandom(16)))))))
    return der_seq(der_seq(*tbs))


def openssl_index(out: Path, serials: list[int], revoked: set[int]) -> Path:
    expiry = (datetime.now(UTC) + timedelta(days=1)).strftime("%y%m%d%H%M%SZ")
    revtime = datetime.now(UTC).strftime("%y%m%d%H%M%SZ")
    lines = []
    for s in serials:
        hexs = format(s, "X")
        hexs = "0" * (len(hexs) % 2) + hexs
        lines.append(f"R\t{expiry}\t{revtime},keyCompromise\t{hexs}\tunknown\t/CN=bench" if s in revoked
                     else f"V\t{expiry}\t\t{hexs}\tunknown\t/CN=bench")
    (out / "index.txt").write_text("\n".join(lines) + "\n")
    (out / "index.txt.attr").write_text("unique_subject = no\n")
    return out / "index.txt"


def cfssl_responses(out: Path, issuer: x509.Certificate, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                    serials: list[int], revoked: set[int], nh: bytes, kh: bytes) -> Path:
    """Pre-signed responses (SHA-1 CertIDs: cfssl indexes by serial only), one base64 DER per line."""
    now = datetime.now(UTC).replace(microsecond=0)
    lines = []
    for s in serials:
        b = ocsp.OCSPResponseBuilder().add_response_by_hash(
            nh, kh, s, hashes.SHA1(), ocsp.OCSPCertStatus.REVOKED if s in revoked else ocsp.OCSPCertStatus.GOOD,
            now, now + timedelta(hours=1), now if s in revoked else None,
            x509.ReasonFlags.key_compromise if s in revoked else None)
        der = b.responder_id(ocsp.OCSPResponderEncoding.HASH, cert).certificates([cert]).sign(
            key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        lines.append(base64.b64encode(der).decode())
    (out / "responses.b64").write_text("\n".join(lines) + "\n")
    del issuer
    return out / "responses.b64"


def start(cmd: list[str], log: Path, port: int, env: dict[str, str] | None = None,
          ready_text: str | None = None) -> subprocess.Popen[bytes]:
    """Start in the namespace; ready when the port accepts (or, for `openssl ocsp`, which wedges on
    a connection closed without a request, when its log says so)."""
    proc = subprocess.Popen([*WRAP, *cmd], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600  # cfssl parses (and verifies) every pre-signed response at start
    while time.monotonic() < deadline:
        if ready_text is not None:
            if ready_text in log.read_text(errors="replace"):
                return proc
            time.sleep(0.1)
            continue
        r = subprocess.run([*WRAP, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], capture_output=True,
                           check=False)
        if r.returncode == 0:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"{cmd[0]} did not start: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def warm_up(port: int, bodies: list[Path]) -> None:
    script = ("import sys, http.client\n"
              "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=60)\n"
              "for p in sys.argv[2:]:\n"
              "    c.request('POST', '/ocsp', open(p, 'rb').read(), {'Content-Type': 'application/ocsp-request'})\n"
              "    assert c.getresponse().read()\n")
    subprocess.run([*WRAP, sys.executable, "-c", script, str(port), *map(str, bodies)], check=True, timeout=600)


def ab(port: int, body: Path, n: int, path: str = "/ocsp") -> tuple[float, float]:
    proc = subprocess.run([*WRAP, "ab", "-q", "-n", str(n), "-c", "64", "-p", str(body), "-T",
                           "application/ocsp-request", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=300, check=False)
    rps = re.search(r"Requests per second:\s+([\d.]+)", proc.stdout)
    p99 = re.search(r"^\s+99%\s+(\d+)", proc.stdout, re.M)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", proc.stdout)
    if not rps or non2xx:
        raise RuntimeError(f"ab failed: {proc.stdout[-1500:]}{proc.stderr[-500:]}")
    return float(rps.group(1)), float(p99.group(1)) if p99 else float("nan")


WRK_LUA = """
local bodies, i = {}, 0
for line in io.lines("%s") do
  local f = io.open(line, "rb"); bodies[#bodies + 1] = f:read("*all"); f:close()
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/ocsp-request"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def wrk(port: int, bodies: list[Path], seconds: int, work: Path, path: str = "/ocsp") -> tuple[float, float]:
    listing = work / f"bodies-{len(bodies)}-{bodies[0].stem}.txt"
    listing.write_text("\n".join(str(b) for b in bodies) + "\n")
    script = work / f"{listing.stem}.lua"
    script.write_text(WRK_LUA % listing)
    proc = subprocess.run([*WRAP, "wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s", str(script),
                           f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", proc.stdout)
    if not rps or "Non-2xx" in proc.stdout:
        raise RuntimeError(f"wrk failed: {proc.stdout[-1500:]}{proc.stderr[-500:]}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return float(rps.group(1)), float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")


class Results(dict[tuple[str, str], tuple[float, float]]):
    """Printed as measured, so an interrupted run still reports."""

    def __setitem__(self, key: tuple[str, str], value: tuple[float, float]) -> None:
        super().__setitem__(key, value)
        print(f"  {key[0]:10} {key[1]:32} {value[0]:10.0f} req/s  p99 {value[1]:.1f} ms", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certs", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    for tool in ("ab", "wrk", "cfssl", "openssl", "ip"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: run make setup", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="ikepki-bench-ocsp-"))
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        return run(args, work, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


def run(args: argparse.Namespace, work: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    from ocsp.signers import issuer_hashes

    t0 = time.monotonic()
    directory = init_deployment_dir(work / "dep")
    dep, serials, revoked = bulk_ca(directory, args.certs)
    issuer = dep.issuers["ec"].certificate  # type: ignore[attr-defined]
    _, nh, kh = issuer_hashes(issuer)[0]
    cert, key = software_responder(dep, work)
    (work / "ca.pem").write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
    index = openssl_index(work, serials, revoked)
    sample = serials[:: max(1, len(serials) // 1000)][:1000]
    responses = cfssl_responses(work, issuer, cert, key, serials, revoked, nh, kh)
    bodies, nonce_bodies = [], []
    for i, s in enumerate(sample):
        (work / f"req-{i}.der").write_bytes(request_der(nh, kh, s, False))
        (work / f"nreq-{i}.der").write_bytes(request_der(nh, kh, s, True))
        bodies.append(work / f"req-{i}.der")
        nonce_bodies.append(work / f"nreq-{i}.der")
    print(f"setup: {args.certs} certs, {len(sample)} request bodies ({time.monotonic() - t0:.0f} s)", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    results = Results()

    port = 18801
    ikepki = start([IKEPKI, "ocsp", "serve", "--dir", str(directory), "--port", str(port), "--no-workers",
                    "--workers", str(args.workers)], work / "ikepki.log", port, env)
    procs.append(ikepki)
    warm_up(port, bodies)  # the first request of each CertID signs; measure the pre-signed path
    wrk(port, bodies, max(2, args.seconds // 2), work)  # every worker's cache too (64 connections over them)
    results[("ikepki", "ab, no keep-alive")] = ab(port, bodies[0], args.requests)
    results[("ikepki", "ab, no keep-alive, nonce")] = ab(port, nonce_bodies[0], args.requests // 2)
    results[("ikepki", "wrk keep-alive, 1000 bodies")] = wrk(port, bodies, args.seconds, work)
    results[("ikepki", "wrk keep-alive, nonce")] = wrk(port, nonce_bodies, args.seconds, work)
    stop(ikepki)

    port = 18802
    cfssl = start(["cfssl", "ocspserve", "-address", "127.0.0.1", "-port", str(port), "-responses", str(responses),
                   "-loglevel", "5"], work / "cfssl.log", port)
    procs.append(cfssl)
    results[("cfssl", "ab, no keep-alive")] = ab(port, bodies[0], args.requests, "/")
    results[("cfssl", "wrk keep-alive, 1000 bodies")] = wrk(port, bodies, args.seconds, work, "/")
    stop(cfssl)

    for label, body, n in (("ab, no keep-alive", bodies[0], args.requests),
                           ("ab, no keep-alive, nonce", nonce_bodies[0], args.requests // 2)):
        port += 1  # a fresh responder per run (it does not survive some client disconnects)
        openssl_proc = start(["openssl", "ocsp", "-index", str(index), "-port", str(port), "-rsigner",
                              str(work / "responder.pem"), "-rkey", str(work / "responder.key"), "-CA",
                              str(work / "ca.pem"), "-nmin", "60", "-ignore_err"], work / f"openssl-{port}.log", port,
                             ready_text="ACCEPT")
        procs.append(openssl_proc)
        results[("openssl", label)] = ab(port, body, n, "/")
        stop(openssl_proc)

    print(f"\n{'responder':10} {'load':32} {'req/s':>10} {'p99 ms':>8}")
    for (who, load), (rps, p99) in results.items():
        print(f"{who:10} {load:32} {rps:10.0f} {p99:8.1f}")
    print(f"ikepki ran {args.workers} worker process(es); load average during the run: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("(cfssl has no nonce support; openssl ocsp cannot take keep-alive load)")
    print("\nratios (ikepki / peer, same load, same run):")
    for (who, load), (rps, _) in results.items():
        if who != "ikepki" and ("ikepki", load) in results:
            print(f"  {load:32} ikepki/{who}: {results[('ikepki', load)][0] / rps:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
