"""Issue 21 defect 10: with audit.log unwritable an EST enrollment answered 500 yet committed a
certificate and its DB audit row (no line in audit.log), and the device's retry got 403 "already
used". Now the audit line is written inside the issuing transaction: an unwritable sink means
nothing is issued, the answer is "unavailable" (EST 503) and the one-time secret stays usable."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca.audit import AuditLog
from ca.authority import Authority
from ca.errors import ErrorKind, PKIError
from ca.model import CertificateQuery, Requester, RevocationReason, RevocationRequest
from enrollment.est.registrations import DeviceRegistration
from enrollment.est.service import EnrollCall, EstService
from enrollment.est.settings import EstSettings


class WithAudit:
    """The session deployment with its Authority writing audit lines to ``path``."""

    def __init__(self, dep: Any, path: Path) -> None:
        self._dep = dep
        auth = dep.authority
        self.audit = AuditLog(path)
        self.authority = Authority(auth.issuers, auth.store, auth.profiles, self.audit, auth.clock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dep, name)


def _csr(device: str) -> bytes:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{device}.example.test")]), critical=False)
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(Encoding.DER))


def test_unwritable_audit_sink_issues_nothing_and_keeps_the_secret(deployment: Any, tmp_path: Path) -> None:
    device = f"audit-fault-{secrets.token_hex(3)}"
    unwritable = tmp_path / "audit.log"
    unwritable.mkdir()  # opening a directory for append fails (EISDIR), even as root
    broken = EstService(WithAudit(deployment, unwritable), EstSettings())
    (issued_secret,) = broken.registrations.register(
        [DeviceRegistration(device, "machine", (f"DNS:{device}.example.test",))], datetime.now(UTC), "test", 1)
    call = EnrollCall("simpleenroll", None, _csr(device), (device, issued_secret.secret), None, "127.0.0.1")
    with pytest.raises(PKIError) as err:
        broken.enroll(call)
    assert err.value.kind is ErrorKind.UNAVAILABLE and "audit" in err.value.detail
    found = deployment.store.search(CertificateQuery(san=f"DNS:{device}.example.test"))
    assert found == []  # no certificate (and no DB audit row: same transaction)
    registration = broken.registrations.get(device)
    assert registration is not None and not registration.used

    good_log = tmp_path / "good-audit.log"
    fixed = EstService(WithAudit(deployment, good_log), EstSettings())
    outcome = fixed.enroll(call)  # the device's retry works once the sink is back
    assert outcome.issued is not None
    line = json.loads(good_log.read_text().splitlines()[-1])
    assert line["action"] == "issue" and line["serial"] == outcome.issued.info.serial_hex


def test_unwritable_audit_sink_refuses_revocation_without_changing_it(deployment: Any, tmp_path: Path) -> None:
    device = f"audit-revoke-{secrets.token_hex(3)}"
    good = WithAudit(deployment, tmp_path / "audit.log")
    from ca.csr import parse_csr
    from ca.model import IssuanceRequest

    issued = good.authority.issue(IssuanceRequest(parse_csr(_csr(device)), "machine", Requester("test", "pytest")))
    unwritable = tmp_path / "dir"
    unwritable.mkdir()
    broken = WithAudit(deployment, unwritable)
    with pytest.raises(PKIError) as err:
        broken.authority.revoke(RevocationRequest((issued.serial,), RevocationReason.keyCompromise,
                                                  Requester("test", "pytest")))
    assert err.value.kind is ErrorKind.UNAVAILABLE
    info = deployment.store.get(issued.serial)
    assert info is not None and info.status.value == "valid"
    done = good.authority.revoke(RevocationRequest((issued.serial,), RevocationReason.keyCompromise,
                                                   Requester("test", "pytest")))
    assert [d.serial for d in done] == [issued.serial]


def test_unwritable_audit_sink_refuses_registration_and_decision(deployment: Any, tmp_path: Path) -> None:
    """EST register and approve/reject write their audit line inside the transaction: with the sink
    unwritable nothing is registered and the held enrollment stays pending."""
    from enrollment.est.admin import decide_pending, register_devices

    device = f"audit-reg-{secrets.token_hex(3)}"
    unwritable = tmp_path / "dir"
    unwritable.mkdir()
    settings = EstSettings()  # the default labels serve the machine profile
    broken = EstService(WithAudit(deployment, unwritable), settings)
    with pytest.raises(PKIError) as err:
        register_devices(broken, [DeviceRegistration(device, "machine", (f"DNS:{device}.example.test",))], "test")
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert broken.registrations.get(device) is None
    pending = broken.registrations.add_pending(f"key-{device}", "m", "test", device, f"CN={device}",
                                               [f"DNS:{device}.example.test"], _csr(device), datetime.now(UTC))
    with pytest.raises(PKIError) as err:
        decide_pending(broken, pending.id, True, "test", "cli")
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert [p.id for p in broken.registrations.list_pending() if p.id == pending.id] == [pending.id]
    good = EstService(WithAudit(deployment, tmp_path / "audit.log"), settings)
    assert decide_pending(good, pending.id, True, "test", "cli").status == "approved"
    assert json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])["action"] == "est-approve"
