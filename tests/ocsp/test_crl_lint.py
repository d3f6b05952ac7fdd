"""Issue 21 defect 2: a revoker could make the CA sign an invalid CRL (invalidity date year 1,
written as "10101000000Z"). Invalidity dates are now bounded in the core, the encoder is fixed,
and every CRL is linted before it is signed; pkilint checks what the publisher publishes."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ca.csr import parse_csr
from ca.errors import ErrorKind, PKIError
from ca.model import CertStatus, IssuanceRequest, Requester, RevocationReason, RevocationRequest
from ocsp.crl import build_crl
from ocsp.crl_lint import CrlLintError, lint_crl_entry
from ocsp.crl_publisher import CrlPublisher
from tests.ocsp.test_crl_scale import software_issuer

LINT_CRL = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lint_crl")
# what the old encoder wrote for invalidityDate 0001-01-01T00:00:00Z: strftime("%Y") gives "1"
OLD_BAD_ENTRY = bytes.fromhex("302c020201f5170d3236303130313030303030305a301730150603551d18040e180c3130313031"
                              "3030303030305a")


def _issue(deployment: Any) -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("inv.example.test")]), critical=False)
           .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    issued = deployment.authority.issue(IssuanceRequest(parse_csr(csr.public_bytes(Encoding.DER)), "machine",
                                                        Requester("test", "pytest")))
    return issued.serial


@pytest.mark.parametrize("when", [
    datetime(1, 1, 1, tzinfo=UTC),  # the reported one: before notBefore, and unencodable by the old code
    datetime.now(UTC) + timedelta(days=1),  # in the future
    datetime(2026, 1, 1),
])
def test_invalidity_date_out_of_bounds_is_refused(deployment: Any, when: datetime) -> None:
    serial = _issue(deployment)
    with pytest.raises(PKIError) as err:
        deployment.authority.revoke(RevocationRequest((serial,), RevocationReason.keyCompromise,
                                                      Requester("test", "pytest"), invalidity_date=when))
    assert err.value.kind is ErrorKind.BAD_REQUEST
    info = deployment.store.get(serial)
    assert info is not None and info.status is CertStatus.valid and info.crl_entry_der is None


def test_valid_invalidity_date_reaches_a_parsable_crl(deployment: Any, tmp_path: Path) -> None:
    serial = _issue(deployment)
    when = datetime.now(UTC).replace(microsecond=0)
    deployment.authority.revoke(RevocationRequest((serial,), RevocationReason.keyCompromise,
                                                  Requester("test", "pytest"), invalidity_date=when))
    publisher = CrlPublisher(deployment)
    publisher.publish_full("ec", is_base=True)
    publisher.publish_delta("ec")
    with deployment.db.read() as conn:
        from ocsp.crl_publisher import CRLS
        rows = {kind: bytes(der) for kind, der in conn.execute(
            CRLS.select().with_only_columns(CRLS.c.kind, CRLS.c.der).where(CRLS.c.issuer_id == "ec")
            .order_by(CRLS.c.crl_number))}
    for kind, der in rows.items():
        crl = x509.load_der_x509_crl(der)  # cryptography parses every entry
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        assert entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc == when
        path = tmp_path / f"{kind}.crl"
        path.write_bytes(der)
        proc = subprocess.run([LINT_CRL, "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", "-f", "JSON",
                               "--document-format", "DER", str(path)], capture_output=True, text=True, check=False)
        report = json.loads(proc.stdout or "{}")
        findings = [f["code"] for r in report.get("results", []) for f in r.get("finding_descriptions", [])]
        assert not findings and not proc.stderr.strip(), (kind, findings, proc.stderr)


def _good_entry(now: datetime) -> bytes:
    from ca.crl_entry import crl_entry_der

    return crl_entry_der(501, now, RevocationReason.keyCompromise.value, now - timedelta(hours=1))


def test_lint_refuses_the_old_bad_entry_before_signing(monkeypatch: pytest.MonkeyPatch) -> None:
    import ocsp.crl

    with pytest.raises(CrlLintError, match="GeneralizedTime"):
        lint_crl_entry(OLD_BAD_ENTRY)
    issuer = software_issuer()
    now = datetime.now(UTC).replace(microsecond=0)
    signed: list[bytes] = []
    original = ocsp.crl.signed
    monkeypatch.setattr(ocsp.crl, "signed", lambda key, tbs, alg: signed.append(tbs) or original(key, tbs, alg))
    build_crl(issuer, [_good_entry(now)], 6, now, now + timedelta(hours=1))
    assert len(signed) == 1  # the spy sees what is signed
    signed.clear()
    with pytest.raises(CrlLintError):
        build_crl(issuer, [OLD_BAD_ENTRY], 7, now, now + timedelta(hours=1))
    with pytest.raises(CrlLintError, match="nextUpdate"):
        build_crl(issuer, [], 7, now, now)
    assert signed == []  # nothing reached the key


def test_migration_repairs_a_poisoned_entry(tmp_path: Path) -> None:
    """ca_0002: a database revoked with invalidityDate 0001-01-01 before the fix holds the bad entry
    DER; the migration re-encodes it (dropping the out-of-bounds date) so CRLs lint clean again."""
    from sqlalchemy import create_engine, insert, select

    from ca.crl_entry import crl_entry_der
    from ca.store import migrate
    from ca.store.sql import CERTS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "ca_0001")
    now = datetime.now(UTC).replace(microsecond=0)
    good_inv = now - timedelta(minutes=5)
    rows = [("1f5", datetime(1, 1, 1, tzinfo=UTC), OLD_BAD_ENTRY),
            ("2a", good_inv, crl_entry_der(0x2a, now, 1, good_inv))]
    engine = create_engine(url)
    with engine.begin() as conn:
        for serial, inv, entry in rows:
            conn.execute(insert(CERTS).values(
                serial=serial, issuer_id="ec", subject="", sans="[]", profile="machine",
                not_before=now - timedelta(hours=1), not_after=now + timedelta(hours=1), status="revoked", der=b"x",
                requester="t", channel="t", created_at=now, revoked_at=now, revocation_reason="keyCompromise",
                invalidity_date=inv, crl_entry_der=entry))
    migrate.upgrade(url)
    with engine.begin() as conn:
        got = {r.serial: r for r in conn.execute(
            select(CERTS.c.serial, CERTS.c.invalidity_date, CERTS.c.crl_entry_der))}
    engine.dispose()
    assert got["1f5"].invalidity_date is None and bytes(got["1f5"].crl_entry_der) == crl_entry_der(0x1f5, now, 1)
    assert bytes(got["2a"].crl_entry_der) == rows[1][2]  # a correct entry is left as it was
    for r in got.values():
        lint_crl_entry(bytes(r.crl_entry_der), delta=False)


def test_pushed_local_crl_is_linted_too() -> None:
    """ocsp.push.crl.build_local_crl (the CRL a VICI gateway is loaded with) goes through the same lint."""
    from types import SimpleNamespace

    from ocsp.push.crl import build_local_crl

    scale = software_issuer()
    issuer = SimpleNamespace(id="ec", certificate=scale.certificate, key=scale.key)  # an ikepki issuer's fields
    now = datetime.now(UTC).replace(microsecond=0)
    der = build_local_crl(issuer, [_good_entry(now)], now, timedelta(minutes=10))
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(scale.certificate.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(501) is not None
    with pytest.raises(CrlLintError):
        build_local_crl(issuer, [OLD_BAD_ENTRY], now, timedelta(minutes=10))
