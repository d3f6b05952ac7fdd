"""CRL rebuild times and revocation latency.

A. Rebuild of a CRL with N = 10k / 100k / 1M revoked entries (keyCompromise reason, P-256 CA):
   - ikepki builder from precomputed entry DER (what the publisher does, ocsp/crl.py);
   - ikepki from a SQLite store: full entry load + build, then the incremental rebuild after one
     more revocation (ocsp/crl_publisher.py EntryCache);
   - peer: cryptography ``CertificateRevocationListBuilder`` with the entries passed to the
     constructor (the linear path; never chained add_revoked_certificate, which is quadratic);
   - peer: ``openssl ca -gencrl`` from an index.txt (10k and 100k; 1M with --openssl-1m).
B. Revocation latency on a live ``ikepki serve`` (workers in-process): revoke through the
   Authority, then poll until the pre-signed OCSP answer says revoked and until /crl/ec.crl and
   /crl/ec-delta.crl list the serial.

    .venv/bin/python bench/crl.py [--sizes 10000,100000,1000000] [--runs 5] [--openssl-1m]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from ca.crl_entry import der_time  # noqa: E402
from ca.keys.signer import SigningKey  # noqa: E402
from ocsp.crl import CrlIssuer, build_crl  # noqa: E402

REASON = bytes.fromhex("300c300a0603551d1504030a0101")


def software_ca(work: Path) -> tuple[CrlIssuer, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CRL CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.BasicConstraints(True, None), True).sign(key, hashes.SHA256()))
    (work / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return CrlIssuer("bench", cert, SigningKey("software:bench", key), "http://127.0.0.1/crl/bench-delta.crl"), key


def entries(n: int, at: datetime) -> tuple[list[bytes], list[int]]:
    pool = os.urandom(19 * n)
    when = der_time(at)
    head = b"\x30" + bytes([22 + len(when) + len(REASON)]) + b"\x02\x14\x01"
    ders = [head + pool[i * 19:(i + 1) * 19] + when + REASON for i in range(n)]
    return ders, [int.from_bytes(b"\x01" + pool[i * 19:(i + 1) * 19], "big") for i in range(n)]


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def bench_ikepki_builder(issuer: CrlIssuer, ders: list[bytes], now: datetime) -> float:
    # entries_linted: as the publisher builds it (its entry cache lints each entry once, when loaded)
    elapsed, (der, _) = timed(lambda: build_crl(issuer, ders, 1, now, now + timedelta(hours=24), entries_linted=True))
    assert x509.load_der_x509_crl(der).is_signature_valid(issuer.certificate.public_key())  # type: ignore[arg-type]
    return elapsed


def bench_store(work: Path, issuer: CrlIssuer, ders: list[bytes], now: datetime) -> tuple[float, float]:
    from sqlalchemy import insert

    from ca.crl_entry import crl_entry_der
    from ca.store import migrate
    from ca.store.db import Database
    from ca.store.sql import CERTS, OUTBOX
    from ocsp.crl_publisher import EntryCache

    url = f"sqlite:///{work / f'store-{len(ders)}.db'}"
    migrate.upgrade(url)
    db = Database(url)
    ts = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    with db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO certificates (serial, issuer_id, subject, sans, profile, not_before, not_after, status, "
            "revoked_at, revocation_reason, crl_entry_der, der, requester, channel, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(d[4:24].hex().lstrip("0"), "bench", "CN=x", "[]", "machine", ts, ts, "revoked", ts, "keyCompromise", d,
              b"x", "", "", ts) for d in ders])
    cache = EntryCache(db, "bench", reload_after=3600)
    full = timed(lambda: build_crl(issuer, cache.current(), 1, now, now + timedelta(hours=24)))[0]
    serial = int.from_bytes(os.urandom(19), "big") | 1
    with db.write() as conn:
        conn.execute(insert(CERTS), {"serial": format(serial, "x"), "issuer_id": "bench", "subject": "CN=y",
                                     "sans": "[]", "profile": "machine", "not_before": now, "not_after": now,
                                     "status": "revoked", "revoked_at": now, "der": b"y", "requester": "",
                                     "channel": "", "crl_entry_der": crl_entry_der(serial, now, 1), "created_at": now})
        conn.execute(insert(OUTBOX), {"event_id": os.urandom(8).hex(), "kind": "revoked", "issuer_id": "bench",
                                      "serial": format(serial, "x"), "payload": "{}", "created_at": now})
    incremental = timed(lambda: build_crl(issuer, cache.current(), 2, now, now + timedelta(hours=24)))[0]
    db.dispose()
    return full, incremental


def bench_cryptography(key: ec.EllipticCurvePrivateKey, issuer: CrlIssuer, serials: list[int],
                       now: datetime) -> float:
    def build() -> bytes:
        reason = x509.CRLReason(x509.ReasonFlags.key_compromise)
        revoked = [x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now)
                   .add_extension(reason, False).build() for s in serials]
        builder = x509.CertificateRevocationListBuilder(issuer.certificate.subject, now, now + timedelta(hours=24),
                                                        [], revoked)
        return builder.add_extension(x509.CRLNumber(1), False).sign(key, hashes.SHA256()).public_bytes(
            serialization.Encoding.DER)

    return timed(build)[0]


OPENSSL_CNF = """
[ ca ]
default_ca = CA_default
[ CA_default ]
database = {dir}/index.txt
crlnumber = {dir}/crlnumber
default_md = sha256
default_crl_hours = 24
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
"""


def bench_openssl(work: Path, serials: list[int], now: datetime) -> float:
    d = work / f"openssl-{len(serials)}"
    d.mkdir()
    exp, rev = (now + timedelta(days=1)).strftime("%y%m%d%H%M%SZ"), now.strftime("%y%m%d%H%M%SZ")
    with (d / "index.txt").open("w") as f:
        for s in serials:
            h = format(s, "X")
            f.write(f"R\t{exp}\t{rev},keyCompromise\t{'0' * (len(h) % 2)}{h}\tunknown\t/CN=x\n")
    (d / "index.txt.attr").write_text("unique_subject = no\n")
    (d / "crlnumber").write_text("01\n")
    (d / "c.cnf").write_text(OPENSSL_CNF.format(dir=d))
    t = time.perf_counter()
    subprocess.run(["openssl", "ca", "-config", str(d / "c.cnf"), "-gencrl", "-keyfile", str(work / "ca.key"),
                    "-cert", str(work / "ca.pem"), "-out", str(d / "crl.pem"), "-batch"], check=True,
                   capture_output=True, timeout=1800)
    return time.perf_counter() - t


def part_a(args: argparse.Namespace, work: Path) -> None:
    issuer, key = software_ca(work)
    now = datetime.now(UTC).replace(microsecond=0)
    print(f"{'N':>9} {'ikepki build':>13} {'ikepki store':>13} {'+1 revoke':>10} {'cryptography':>13} "
          f"{'openssl ca':>11}  ratios (peer / ikepki build)")
    for n in args.sizes:
        ders, serials = entries(n, now)
        ours = bench_ikepki_builder(issuer, ders, now)
        store_full, store_inc = bench_store(work, issuer, ders, now)
        crypto = bench_cryptography(key, issuer, serials, now)
        ossl = bench_openssl(work, serials, now) if n <= 100_000 or args.openssl_1m else float("nan")
        print(f"{n:>9} {ours:>12.3f}s {store_full:>12.3f}s {store_inc:>9.3f}s {crypto:>12.3f}s {ossl:>10.3f}s"
              f"  cryptography {crypto / ours:.0f}x, openssl ca {ossl / ours:.0f}x, store-incremental "
              f"{store_inc / ours:.2f}x")


def part_b(args: argparse.Namespace, work: Path) -> None:
    from ca.csr import parse_csr
    from ca.deployment import Deployment
    from ca.model import IssuanceRequest, Requester, RevocationReason, RevocationRequest
    from ocsp.signers import issuer_hashes
    from tests.conftest import init_deployment_dir, start_server

    directory = init_deployment_dir(work / "dep")
    server = start_server(directory)
    try:
        os.environ["SOFTHSM2_CONF"] = str(directory / "softhsm2.conf")
        dep = Deployment.open(directory)
        who = Requester("bench", "crl")
        _, nh, kh = issuer_hashes(dep.issuers["ec"].certificate)[0]
        ocsp_lat, full_lat, delta_lat = [], [], []
        for i in range(args.runs):
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"b{i}.example.test")]))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"b{i}.example.test")]), False)
                   .sign(key, hashes.SHA256()))
            issued = dep.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(serialization.Encoding.DER)),
                                                         "machine", who))
            serial = issued.info.serial
            req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(nh, kh, serial, hashes.SHA1()).build() \
                .public_bytes(serialization.Encoding.DER)
            client = httpx.Client(base_url=server.http_url, timeout=30)

            def ocsp_revoked() -> bool:
                r = client.post("/ocsp", content=req,  # noqa: B023
                                headers={"Content-Type": "application/ocsp-request"})
                return ocsp.load_der_ocsp_response(r.content).certificate_status is ocsp.OCSPCertStatus.REVOKED

            def listed(name: str) -> bool:
                r = client.get(f"/crl/{name}")  # noqa: B023
                return r.status_code == 200 and x509.load_der_x509_crl(
                    r.content).get_revoked_certificate_by_serial_number(serial) is not None  # noqa: B023

            assert not ocsp_revoked()  # pre-signed "good" is cached now
            t0 = time.monotonic()
            dep.authority.revoke(RevocationRequest((serial,), RevocationReason.keyCompromise, who))
            pending = {"ocsp": ocsp_revoked, "full": lambda: listed("ec.crl"), "delta": lambda: listed("ec-delta.crl")}
            got: dict[str, float] = {}
            while pending and time.monotonic() - t0 < 30:
                for name, check in list(pending.items()):
                    if check():
                        got[name] = time.monotonic() - t0
                        del pending[name]
                time.sleep(0.02)
            ocsp_lat.append(got.get("ocsp", float("nan")))
            full_lat.append(got.get("full", float("nan")))
            delta_lat.append(got.get("delta", float("nan")))
            client.close()
        print(f"\nrevoke -> visible on a live `ikepki serve` (median of {args.runs}; polled every ~20 ms):")
        print(f"  pre-signed OCSP answer revoked: {statistics.median(ocsp_lat) * 1000:.0f} ms")
        print(f"  full CRL lists it:              {statistics.median(full_lat) * 1000:.0f} ms")
        print(f"  delta CRL lists it:             {statistics.median(delta_lat) * 1000:.0f} ms")
        print("  (strongSwan caches CRLs/OCSP until nextUpdate: push, not these, bounds its exposure)")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--openssl-1m", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ikepki-bench-crl-"))
    part_a(args, work)
    if not args.skip_latency:
        part_b(args, work)
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
