"""Attestation benchmarks: server-side verification cost and full enrollment time against swtpm.

    .venv/bin/python bench/attest.py [--seconds 1.0] [--enrollments 10] [--json out.json]

Server-side rows replay pre-recorded artefacts (one attObj, EK certificates, AK public) in a loop
calibrated to ``--seconds`` per repeat, 5 repeats, median.  Enrollment rows drive a real swtpm
(started like tests/attestation/conftest.py: private swtpm_localca CA, free loopback ports).
Absolute numbers on the shared 2-vCPU machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.serialization import Encoding

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "attestation"))

from conftest import SoftwareCa, make_ca, running_swtpm  # noqa: E402

from enrollment.attestation.clock import SystemClock  # noqa: E402
from enrollment.attestation.credential import (  # noqa: E402
    CredentialActivation,
    CredentialChallenge,
    make_credential_blob,
)
from enrollment.attestation.device import EkKind, TpmDevice  # noqa: E402
from enrollment.attestation.ek import EkTrustStore, validate_ek_certificate  # noqa: E402
from enrollment.attestation.repository import InMemoryChallengeRepository  # noqa: E402
from enrollment.attestation.tpm_statement import parse_att_obj, verify_tpm_attestation  # noqa: E402

KEY_AUTHORIZATION = "bench-token.bench-thumbprint"
T = TypeVar("T")


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(median wall ops/s, median CPU ms/op) over 5 repeats of a loop calibrated to ``seconds``."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 10:
        fn()
        n += 1
    n = max(1, int(n * 10))
    walls, cpus = [], []
    for _ in range(5):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        walls.append(n / (time.perf_counter() - start))
        cpus.append((time.process_time() - cpu) * 1000 / n)
    return statistics.median(walls), statistics.median(cpus)


def server_side(tcti: str, roots: Path, seconds: float) -> dict[str, tuple[float, float]]:
    clock = SystemClock()
    trust = EkTrustStore.from_directory(roots)
    ca = make_ca("bench attestation CA")
    activation = CredentialActivation(trust, InMemoryChallengeRepository[CredentialChallenge](), clock)
    with TpmDevice(tcti) as device, TpmDevice(tcti, "ecc") as ecc_device:
        rsa_ek, ecc_ek, ak_public = device.ek_certificate(), ecc_device.ek_certificate(), device.ak_public()
        blob = activation.start(rsa_ek, ak_public)
        activated = activation.finish(
            blob.challenge_id, device.activate_credential(blob.id_object, blob.encrypted_secret)
        )
        ak_cert = ca.sign_ak(activated)
        device.create_device_key()
        csr_key = device.build_csr().public_key()
        att_obj = device.att_obj(KEY_AUTHORIZATION, [ak_cert.public_bytes(Encoding.DER)])
    rsa_identity = validate_ek_certificate(rsa_ek, trust, clock.now())
    ecc_identity = validate_ek_certificate(ecc_ek, trust, clock.now())

    def verify() -> object:
        return verify_tpm_attestation(
            att_obj, key_authorization=KEY_AUTHORIZATION, csr_public_key=csr_key,
            attestation_roots=[ca.cert], now=datetime.now(UTC),
        )  # fmt: skip

    return {
        "verify_tpm_attestation (attObj, P-256 AK, P-384 CA)": rate(verify, seconds),
        "parse_att_obj only": rate(lambda: parse_att_obj(att_obj), seconds),
        "validate_ek_certificate RSA-2048 EK (RSA-3072 chain)": rate(
            lambda: validate_ek_certificate(rsa_ek, trust, datetime.now(UTC)), seconds
        ),
        "MakeCredential to RSA-2048 EK": rate(
            lambda: make_credential_blob(rsa_identity.public_key, activated.ak_name, bytes(32)), seconds
        ),
        "MakeCredential to P-384 EK": rate(
            lambda: make_credential_blob(ecc_identity.public_key, activated.ak_name, bytes(32)), seconds
        ),
        "CredentialActivation.start (RSA EK, incl. EK validation)": rate(
            lambda: activation.start(rsa_ek, ak_public), seconds
        ),
        "issue_ak_certificate via the Authority (software P-384 CA, SQLite store)": rate(
            lambda: ca.sign_ak(activated), seconds
        ),
    }


class Steps:
    """Wall-clock samples per named step."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def run(self, name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        out = fn()
        self.samples.setdefault(name, []).append(time.perf_counter() - start)
        return out

    def medians_ms(self) -> dict[str, float]:
        return {name: statistics.median(values) * 1000 for name, values in self.samples.items()}


def enroll_once(tcti: str, ek_kind: EkKind, trust: EkTrustStore, ca: SoftwareCa, steps: Steps) -> None:
    """One full device enrollment: fresh AK, activation, AK cert, fresh device key, CSR, certify, verify."""
    clock = SystemClock()
    activation = CredentialActivation(trust, InMemoryChallengeRepository[CredentialChallenge](), clock)
    start = time.perf_counter()
    with TpmDevice(tcti, ek_kind) as device:
        ek = steps.run("device: read EK cert (NV)", device.ek_certificate)
        ak = steps.run("device: create+persist AK under EK", lambda: device.ak_public(recreate=True))
        blob = steps.run("server: start (EK check + MakeCredential)", lambda: activation.start(ek, ak))
        secret = steps.run(
            "device: ActivateCredential", lambda: device.activate_credential(blob.id_object, blob.encrypted_secret)
        )
        ak_cert = steps.run(
            "server: finish + AK cert",
            lambda: ca.sign_ak(activation.finish(blob.challenge_id, secret)),
        )
        steps.run("device: create+persist P-256 key", device.create_device_key)
        csr = steps.run("device: CSR signed in TPM", device.build_csr)
        att_obj = steps.run(
            "device: Certify + attObj", lambda: device.att_obj(KEY_AUTHORIZATION, [ak_cert.public_bytes(Encoding.DER)])
        )
    steps.run(
        "server: verify attObj",
        lambda: verify_tpm_attestation(
            att_obj,
            key_authorization=KEY_AUTHORIZATION,
            csr_public_key=csr.public_key(),
            attestation_roots=[ca.cert],
            now=clock.now(),
        ),
    )
    steps.samples.setdefault("total", []).append(time.perf_counter() - start)


def enrollment(tcti: str, roots: Path, count: int, ek_kind: EkKind) -> dict[str, float]:
    """Median per step over ``count`` enrollments (ms)."""
    trust = EkTrustStore.from_directory(roots)
    ca = make_ca("bench attestation CA")
    steps = Steps()
    for _ in range(count):
        enroll_once(tcti, ek_kind, trust, ca, steps)
    return steps.medians_ms()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--enrollments", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with running_swtpm() as tpm:
        server = server_side(tpm.tcti, tpm.ek_roots, args.seconds)
        enroll_rsa = enrollment(tpm.tcti, tpm.ek_roots, args.enrollments, "rsa")
        enroll_ecc = enrollment(tpm.tcti, tpm.ek_roots, args.enrollments, "ecc")
    print("## server side (single thread)\n\n| operation | wall ops/s | CPU ms/op |\n|---|---|---|")
    for name, (ops, cpu_ms) in server.items():
        print(f"| {name} | {ops:,.0f} | {cpu_ms:.3f} |")
    print(f"\n## enrollment against swtpm (median of {args.enrollments}, wall ms)\n")
    print("| step | RSA EK | P-384 EK |\n|---|---|---|")
    for name in enroll_rsa:
        print(f"| {name} | {enroll_rsa[name]:.1f} | {enroll_ecc[name]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"server_ops_per_s": server, "enroll_rsa_ms": enroll_rsa,
                                         "enroll_ecc_ms": enroll_ecc}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
