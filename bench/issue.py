"""Certificates issued per second through the Authority: SoftHSM P-256 issuing CA vs the same
path with a software P-256 key, in one run, 1 and 2 worker processes.

    .venv/bin/python bench/issue.py [--n 2000] [--out bench/out]

Each worker parses a pre-built CSR, issues (build + HSM/software sign + in-process lint),
records it in SQLite (WAL) with its audit row and appends the audit line — the full path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IKEPKI = str(Path(sys.executable).with_name("ikepki"))

WORKER = r"""
import sys, time
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ca.csr import parse_csr
from ca.deployment import Deployment
from ca.model import IssuanceRequest, Requester

directory, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
dep = Deployment.open(directory)
key = ec.generate_private_key(ec.SECP256R1())
csrs = []
for i in range(n):
    name = f"{tag}-{i}.bench.test"
    csrs.append(x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
dep.authority.issue(IssuanceRequest(parse_csr(csrs[0]), "machine", Requester("bench", tag)))  # warm up
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
t0 = time.perf_counter()
for der in csrs[1:]:
    dep.authority.issue(IssuanceRequest(parse_csr(der), "machine", Requester("bench", tag)))
print(f"{(n - 1) / (time.perf_counter() - t0)}")
"""

SOFTWARE_CEREMONY = """
token: {label: bench}
key_backend: software
root: {subject: "CN=bench root", key: "ec:P-384", lifetime_days: 30}
issuers:
  ec: {subject: "CN=bench issuing EC", key: "ec:P-256", lifetime_days: 30}
"""
HSM_CEREMONY = SOFTWARE_CEREMONY.replace("key_backend: software", "key_backend: pkcs11")


def make_deployment(base: Path, name: str, ceremony: str) -> Path:
    directory = base / name
    directory.mkdir()
    (base / f"{name}.yaml").write_text(ceremony)
    subprocess.run([IKEPKI, "init", "--dir", str(directory), "--ceremony", str(base / f"{name}.yaml"), "--json"],
                   check=True, capture_output=True, env=_env())
    return directory


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}


def run(directory: Path, workers: int, n: int) -> float:
    """Start all workers, release them together, return the summed certs/s."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(directory), f"w{i}", str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO) for i in range(workers)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    rates = [float(p.communicate(timeout=600)[0].strip()) for p in procs]
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000, help="certificates per worker")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        hsm = make_deployment(base, "hsm", HSM_CEREMONY)
        sw = make_deployment(base, "software", SOFTWARE_CEREMONY)
        for workers in (1, 2):
            results[f"softhsm_p256_w{workers}"] = run(hsm, workers, args.n)
            results[f"software_p256_w{workers}"] = run(sw, workers, args.n)
    for w in (1, 2):
        results[f"ratio_hsm_vs_software_w{w}"] = results[f"softhsm_p256_w{w}"] / results[f"software_p256_w{w}"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "issue.json").write_text(json.dumps(results, indent=2))
    print("Authority issuance, machine profile, P-256 client keys, SQLite WAL, certs/s")
    for w in (1, 2):
        rate_hsm, rate_sw = results[f"softhsm_p256_w{w}"], results[f"software_p256_w{w}"]
        print(f"  {w} process(es): SoftHSM P-256 {rate_hsm:8.0f}   software P-256 {rate_sw:8.0f}   "
              f"ratio HSM/software {rate_hsm / rate_sw:.2f}")


if __name__ == "__main__":
    main()
