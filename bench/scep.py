"""PKCSReq enrollments per second, end to end over HTTP: ikepki's SCEP server vs Debian's micromdm
``scepserver`` (file depot), driven by the same load generator with RSA-2048 client keys.

    .venv/bin/python bench/scep.py [--requests 200] [--concurrency 8] [--rounds 3]

scepserver has no bind flag and listens on all interfaces, so the whole benchmark (both servers and
the load generator) re-executes itself inside a private network namespace (``unshare -n`` with
``ip link set lo up``): nothing is reachable from outside. Each request is a fresh PKCSReq
(new transactionID and CSR; keys drawn from a pre-generated pool of RSA-2048 keys), built before
the clock starts; the CertRep status is checked after the timed window. Prints enrollments/s per
server (median of the rounds) and the ratio ikepki / micromdm.

Not a like-for-like crypto setup, on purpose: ikepki signs with an RSA-3072 CA key and decrypts and
signs with an RSA-2048 RA key, both on SoftHSM (PKCS#11, serialised), and records every certificate
and transaction in SQLite with an audit row; scepserver uses one RSA-2048 software key and files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402

from enrollment.scep import cms  # noqa: E402
from tests.scep.pyclient import Requester, make_csr, new_key, read_degenerate  # noqa: E402

IKEPKI = str(Path(sys.executable).with_name("ikepki"))
CHALLENGE = "bench-s3cr3t"


def in_private_netns() -> None:
    """Re-exec under ``unshare -n`` once; inside, bring loopback up."""
    if os.environ.get("IKEPKI_BENCH_NETNS") != "1":
        env = {**os.environ, "IKEPKI_BENCH_NETNS": "1"}
        os.execvpe("unshare", ["unshare", "-n", sys.executable, *sys.argv], env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}) before answering {url}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def start_ikepki(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    d = work / "ikepki"
    d.mkdir()
    (d / "ikepki.yaml").write_text(f"scep:\n  profiles:\n    machine:\n      challenge_password: {CHALLENGE}\n")
    subprocess.run([IKEPKI, "init", "--dir", str(d)], check=True, stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    proc = subprocess.Popen([IKEPKI, "serve", "--dir", str(d), "--no-workers", "--http-port", "18080",
                             "--https-port", "18443"], stdout=(work / "ikepki.log").open("wb"),
                            stderr=subprocess.STDOUT, env=env)
    wait_http("http://127.0.0.1:18080/healthz", proc)
    return proc, "http://127.0.0.1:18080/scep"


def start_micromdm(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("scepserver")
    if binary is None:
        raise SystemExit("scepserver (Debian micromdm-scep) is not installed")
    depot = work / "depot"
    subprocess.run([binary, "ca", "-init", "-depot", str(depot), "-keySize", "2048", "-organization", "Example"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen([binary, "-depot", str(depot), "-port", "18090", "-challenge", CHALLENGE,
                             "-allowrenew", "0"], stdout=(work / "scepserver.log").open("wb"),
                            stderr=subprocess.STDOUT)
    wait_http("http://127.0.0.1:18090/scep?operation=GetCACaps", proc)
    return proc, "http://127.0.0.1:18090/scep"


def recipient(url: str) -> x509.Certificate:
    """The certificate to encrypt to: the RA from a CA/RA chain, or the single CA certificate."""
    r = httpx.get(url, params={"operation": "GetCACert"}, timeout=30)
    if r.headers.get("content-type", "").startswith("application/x-x509-ca-cert"):
        return x509.load_der_x509_certificate(r.content)
    certs = read_degenerate(r.content)
    return next((c for c in certs if not _is_ca(c)), certs[0])


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def build_messages(ra: x509.Certificate, keys: list, n: int, tag: str) -> list[bytes]:  # type: ignore[type-arg]
    out = []
    for i in range(n):
        req = Requester.new(keys[i % len(keys)])
        cn = f"{tag}{i}-{os.urandom(3).hex()}.example.test"
        out.append(req.message("19", make_csr(req.key, cn, CHALLENGE, (cn,)), ra, cipher="aes128_cbc"))
    return out


def status_of(body: bytes) -> str:
    """pkiStatus, with failInfo for failures ("2/0" .. "2/4"); "http" when there was no CertRep."""
    from asn1crypto import cms as asn1_cms

    if not body:
        return "http"
    attrs = asn1_cms.ContentInfo.load(body)["content"]["signer_infos"][0]["signed_attrs"]
    status = cms._printable(attrs, cms.OID_PKI_STATUS, 4) or "?"
    return f"{status}/{cms._printable(attrs, cms.OID_FAIL_INFO, 4)}" if status == "2" else status


def run_round(url: str, messages: list[bytes], concurrency: int) -> tuple[float, int]:
    """POST every message with ``concurrency`` keep-alive connections; (successful enrollments/s, successes)."""
    bodies: list[bytes] = [b""] * len(messages)
    index = iter(range(len(messages)))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    i = next(index, None)
                if i is None:
                    return
                r = client.post(url, params={"operation": "PKIOperation"}, content=messages[i],
                                headers={"content-type": "application/x-pki-message"})
                bodies[i] = r.content if r.status_code == 200 else b""

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    elapsed = time.perf_counter() - start
    statuses = Counter(status_of(b) for b in bodies)
    if set(statuses) - {"0"}:
        print(f"    {url}: statuses {dict(statuses)}", flush=True)
    return statuses["0"] / elapsed, statuses["0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200, help="PKCSReq per server per round")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=32, help="pool of RSA-2048 client keys")
    args = ap.parse_args()
    in_private_netns()
    work = Path(tempfile.mkdtemp(prefix="scep-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    keep = False
    try:
        print(f"generating {args.keys} RSA-2048 client keys ...", flush=True)
        keys = [new_key() for _ in range(args.keys)]
        ours, ours_url = start_ikepki(work)
        procs.append(ours)
        theirs, theirs_url = start_micromdm(work)
        procs.append(theirs)
        targets = {"ikepki": (ours_url, recipient(ours_url)), "micromdm": (theirs_url, recipient(theirs_url))}
        results: dict[str, list[float]] = {name: [] for name in targets}
        for name, (url, ra) in targets.items():  # warm-up (and a correctness check)
            rate, ok = run_round(url, build_messages(ra, keys, 10, f"warm-{name}"), 2)
            if ok < 5:
                keep = True
                raise SystemExit(f"{name}: only {ok}/10 warm-up enrollments succeeded (logs in {work})")
        for r in range(args.rounds):
            for name, (url, ra) in targets.items():
                messages = build_messages(ra, keys, args.requests, f"r{r}-{name}")
                rate, ok = run_round(url, messages, args.concurrency)
                if ok != args.requests:
                    print(f"  warning: {name} round {r}: {ok}/{args.requests} succeeded")
                results[name].append(rate)
                print(f"  round {r + 1} {name:9s} {rate:8.1f} enrollments/s ({ok}/{args.requests} SUCCESS)",
                      flush=True)
        ours_rate, theirs_rate = (statistics.median(results[n]) for n in ("ikepki", "micromdm"))
        print(f"\nPKCSReq end to end, RSA-2048 client keys, {args.requests} requests x {args.rounds} rounds, "
              f"concurrency {args.concurrency} (median):")
        print(f"  ikepki   {ours_rate:8.1f} enrollments/s")
        print(f"  micromdm {theirs_rate:8.1f} enrollments/s")
        print(f"  ratio ikepki/micromdm = {ours_rate / theirs_rate:.2f}")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
