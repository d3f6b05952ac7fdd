"""The profile, not the requester, decides every subject attribute (issue 21, defect 1).

A requester used to get whatever its CSR subject said, e.g. ``OU=vpn-admin``, which the bundled
responder's ``role_attribute: OU`` turns into a role. Now a CSR attribute reaches the certificate
only when the profile allows that value, a registration/authorization granted it, or (commonName)
it equals one of the certificate's authorized identifiers; everything else is dropped and named
in the audit line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.authority import Authority
from ca.config import CaSettings, ConfigSource
from ca.csr import parse_csr
from ca.errors import PKIError
from ca.model import IssuanceRequest, Requester
from ca.profiles import subject_policy_from_config

DNS = x509.DNSName("dev1.example.test")


def csr_with(subject: str, sans: list[x509.GeneralName]) -> Any:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(
        subject, {"serialNumber": NameOID.SERIAL_NUMBER}))
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return parse_csr(builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER))


def scoped(deployment: Any, tmp_path: Path, **subject: frozenset[str]) -> Authority:
    from ca.audit import AuditLog

    auth = deployment.authority
    policy = {getattr(NameOID, k): v for k, v in subject.items()}
    profiles = {**auth.profiles, "machine": replace(auth.profiles["machine"], subject_values=policy)}
    return Authority(auth.issuers, auth.store, profiles, AuditLog(tmp_path / "audit.log"), auth.clock)


def test_requested_role_attributes_are_not_copied(deployment: Any, tmp_path: Path) -> None:
    """EST-style request ``CN=dev1,OU=vpn-admin,O=Example``: no OU, no O, and CN only if authorized."""
    auth = scoped(deployment, tmp_path)
    issued = auth.issue(IssuanceRequest(csr_with("CN=dev1,OU=vpn-admin,O=Example", [DNS]), "machine",
                                        Requester("test", "pytest")))
    subject = issued.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME) == []
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
    assert len(subject) == 0  # dev1 is not an authorized identifier: the SAN carries the identity
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280 §4.2.1.6: empty subject -> critical SAN
    line = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert sorted(line["subject_dropped"]) == ["CN=dev1", "O=Example", "OU=vpn-admin"]


def test_acme_style_cn_from_identifier_kept_other_attributes_dropped(deployment: Any, tmp_path: Path) -> None:
    auth = scoped(deployment, tmp_path)
    csr = csr_with("CN=dev1.example.test,OU=vpn-admin,serialNumber=dev2", [DNS])
    issued = auth.issue(IssuanceRequest(csr, "machine", Requester("acme", "acct"), replace_sans=(DNS,)))
    assert issued.certificate.subject.rfc4514_string() == "CN=dev1.example.test"


def test_profile_allowed_values_and_grants(deployment: Any, tmp_path: Path) -> None:
    auth = scoped(deployment, tmp_path, ORGANIZATION_NAME=frozenset({"Example"}))
    ok = auth.issue(IssuanceRequest(csr_with("CN=dev1,O=Example", [DNS]), "machine", Requester("t", "p")))
    assert ok.certificate.subject.rfc4514_string() == "O=Example"
    other = auth.issue(IssuanceRequest(csr_with("O=Evil,OU=vpn-staff,OU=vpn-admin", [DNS]), "machine",
                                       Requester("t", "p"),
                                       subject_grants=(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME,
                                                                          "vpn-staff"),
                                                       x509.NameAttribute(NameOID.COMMON_NAME, "dev1"))))
    assert other.certificate.subject.rfc4514_string() == "OU=vpn-staff"  # a grant permits, never imposes


def test_subject_for_renewal_compares_after_policy(deployment: Any) -> None:
    """A renewing client re-sends its original DN (strongSwan pki): attributes the CA dropped then
    are dropped again, so the result equals the current certificate's subject."""
    auth = deployment.authority
    old = x509.Name.from_rfc4514_string("CN=dev1.example.test")
    csr = csr_with("CN=dev1.example.test,O=Example", [DNS])
    assert auth.subject_for("machine", csr.subject, [DNS], tuple(old))[0] == old
    renamed = csr_with("CN=other.example.test", [DNS])
    assert auth.subject_for("machine", renamed.subject, [DNS], tuple(old))[0] != old


def test_subject_policy_config(tmp_path: Path) -> None:
    cfg = tmp_path / "ikepki.yaml"
    cfg.write_text("profiles:\n  machine: {subject: {O: [Example], OU: [vpn-staff]}}\n")
    settings = ConfigSource.load(cfg).settings(CaSettings)
    policy = subject_policy_from_config("machine", settings.profiles["machine"].subject or {})
    assert policy == {NameOID.ORGANIZATION_NAME: frozenset({"Example"}),
                      NameOID.ORGANIZATIONAL_UNIT_NAME: frozenset({"vpn-staff"})}
    with pytest.raises(PKIError, match="unknown subject attribute"):
        subject_policy_from_config("machine", {"emailAddress": ["x"]})


_ATTRS = [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.SERIAL_NUMBER,
          NameOID.COUNTRY_NAME, NameOID.TITLE, NameOID.EMAIL_ADDRESS]
_VALUES = st.sampled_from(["vpn-admin", "Example", "dev1", "dev1.example.test", "DE", "*", "x" * 65, ""])


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")  # invalid country codes on purpose
@settings(max_examples=300, deadline=None)
@given(requested=st.lists(st.tuples(st.sampled_from(_ATTRS), _VALUES), max_size=8),
       allowed=st.dictionaries(st.sampled_from(_ATTRS[:5]), st.frozensets(_VALUES, max_size=3), max_size=3),
       grants=st.lists(st.tuples(st.sampled_from(_ATTRS[:4]), _VALUES.filter(bool)), max_size=3))
def test_every_kept_attribute_is_authorized(requested: list[tuple[Any, str]], allowed: dict[Any, frozenset[str]],
                                            grants: list[tuple[Any, str]]) -> None:
    """Property: nothing reaches the subject that the profile, a grant or an identifier did not authorize."""
    from ca.profiles import ANY_VALUE, BUILTIN_PROFILES, build_subject

    profile = replace(BUILTIN_PROFILES["machine"], subject_values=allowed)
    name = x509.Name([x509.NameAttribute(oid, v, _validate=False) for oid, v in requested])
    granted = [x509.NameAttribute(oid, v, _validate=False) for oid, v in grants]
    try:
        subject, dropped = build_subject(profile, name, [DNS], granted)
    except PKIError:
        return  # an authorized value of invalid length is refused, never truncated
    for attr in subject:
        ok = ((attr.oid, attr.value) in {(g.oid, g.value) for g in granted}
              or attr.value in allowed.get(attr.oid, frozenset()) or ANY_VALUE in allowed.get(attr.oid, frozenset())
              or (attr.oid == NameOID.COMMON_NAME and attr.value == DNS.value))
        assert ok, attr
    assert len(subject) + len(dropped) == len(requested) or len(dropped) == 16
