"""Two processes issuing 500 certificates each into one SQLite file: nothing lost."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import sys
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
serials = []
for i in range(n):
    name = f"{tag}-{i}.example.test"
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    issued = dep.authority.issue(IssuanceRequest(parse_csr(csr), "machine", Requester("load", tag)))
    serials.append(issued.info.serial_hex)
print("\n".join(serials))
"""


def test_two_processes_issue_1000_certs_into_one_sqlite(fresh_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(fresh_dir), tag, "500"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for tag in ("p1", "p2")]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    returned = [s for out, _ in outputs for s in out.split()]
    assert len(returned) == 1000 and len(set(returned)) == 1000
    with sqlite3.connect(fresh_dir / "ikepki.db") as db:
        rows = db.execute("select serial from certificates where channel = 'load'").fetchall()
        audit_rows = db.execute("select count(*) from audit_events where channel = 'load'").fetchone()[0]
    assert sorted(r[0] for r in rows) == sorted(returned)
    assert audit_rows == 1000
    from ca.audit import verify

    result = verify(fresh_dir / "audit.log")
    assert result.ok, result
    assert result.lines >= 1000
