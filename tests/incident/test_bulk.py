"""Bulk incident: 10,000 serials from a file, revoked in one command, all revoked in the store
(and, where the OCSP responder is mounted, answered as revoked over OCSP)."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, insert, select

from ca.revocation import read_serials_file
from ca.store.sql import CERTS

N = 10_000


def bulk_issue(dep: Any, n: int) -> list[x509.Certificate]:
    """A bulk path for test data: one certificate through the Authority as the template, then
    ``n`` copies with fresh serials signed by the same issuing CA key, stored in one transaction."""
    from ca.csr import parse_csr
    from ca.model import IssuanceRequest, Requester

    tag = os.urandom(3).hex()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"bulk-{tag}.example.test")]), False)
           .sign(key, hashes.SHA256()))
    template = dep.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(serialization.Encoding.DER)),
                                                   "machine", Requester("test", "bulk"))).certificate
    issuer = dep.issuers["ec"]
    certs: list[x509.Certificate] = []
    now = dep.clock.now()
    for i in range(n):
        builder = (x509.CertificateBuilder().subject_name(template.subject).issuer_name(template.issuer)
                   .public_key(template.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=24 + i % 24)))
        for ext in template.extensions:
            builder = builder.add_extension(ext.value, ext.critical)
        certs.append(builder.sign(issuer.key.key, issuer.key.hash_algorithm))
    rows = [{"serial": format(c.serial_number, "x"), "issuer_id": "ec", "subject": "", "profile": "machine",
             "sans": json.dumps([f"DNS:bulk-{tag}.example.test"]), "not_before": c.not_valid_before_utc,
             "not_after": c.not_valid_after_utc, "status": "valid", "der": c.public_bytes(serialization.Encoding.DER),
             "requester": "bulk", "channel": "test", "created_at": now} for c in certs]
    with dep.db.write() as conn:
        conn.execute(insert(CERTS), rows)
    return certs


def _ocsp_statuses(url: str, certs: list[x509.Certificate], issuer: x509.Certificate) -> list[Any]:
    out = []
    with httpx.Client(timeout=10) as client:
        for cert in certs:
            req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
            resp = client.post(f"{url}/ocsp", content=req.public_bytes(serialization.Encoding.DER),
                               headers={"content-type": "application/ocsp-request"})
            if resp.status_code == 404:
                return []  # no OCSP responder mounted in this build
            out.append(ocsp.load_der_ocsp_response(resp.content).certificate_status)
    return out


def test_bulk_revoke_10000_serials_from_a_file(incident, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    dep = incident.deployment
    started = time.monotonic()
    certs = bulk_issue(dep, N)
    seeded = time.monotonic() - started
    serials = [c.serial_number for c in certs]
    csv_file = tmp_path / "serials.csv"
    csv_file.write_text("serial,note\n" + "".join(f"{s:x},compromised laptop batch\n" for s in serials))
    assert read_serials_file(csv_file) == serials

    proc = incident.ikepki("revoke", "--from-file", str(csv_file), "--reason", "keyCompromise", "--yes", "--json",
                           "--wait", "0")
    result = json.loads(proc.stdout)
    assert len(result["revoked"]) == N and result["unchanged"] == [] and result["not_found"] == []
    with capsys.disabled():
        print(f"\n[incident] bulk: {N} certificates seeded in {seeded:.1f} s; revoked in one command: "
              f"{result['elapsed_s']:.1f} s after CLI start-up")

    hexes = [format(s, "x") for s in serials]
    revoked = 0
    with dep.db.read() as conn:
        for i in range(0, N, 500):
            revoked += conn.execute(select(func.count()).select_from(CERTS).where(
                CERTS.c.serial.in_(hexes[i:i + 500]), CERTS.c.status == "revoked")).scalar_one()
    assert revoked == N
    statuses = _ocsp_statuses(incident.server.http_url, certs[:: N // 20], dep.issuers["ec"].certificate)
    assert all(s == ocsp.OCSPCertStatus.REVOKED for s in statuses), statuses
    with capsys.disabled():
        print(f"[incident] OCSP: {len(statuses)} sampled serials answered revoked" if statuses
              else "[incident] OCSP responder not mounted: store check only")


def test_json_lines_file(tmp_path: Path) -> None:
    path = tmp_path / "serials.jsonl"
    path.write_text('{"serial": "0A1b"}\n"ff"\n# comment\n{"serial": 4096}\n')
    assert read_serials_file(path) == [0xA1B, 0xFF, 4096]
