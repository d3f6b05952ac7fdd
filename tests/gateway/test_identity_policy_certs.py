"""Pure rules: ID↔SAN (RFC 4945 §3.1), policy matching and TS narrowing, path validation."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from gw_pki import NOW, STAFF_POLICY_OID, build_pki, make_leaf, make_root

from ca.identity import (
    Identity,
    IdentityError,
    IdType,
    identities_of,
    identity_matches,
    parse_identity,
    san_for_identity,
)
from gateway.certs import CertificateRejected, validate_path
from gateway.ikev2.codec import TrafficSelector
from gateway.policy import Policy, PolicyError, Selector, narrow

PKI = build_pki()


def _leaf_with_sans(*sans: x509.GeneralName) -> x509.Certificate:
    root = PKI.root
    leaf = make_leaf(root, "multi")
    b = (x509.CertificateBuilder().subject_name(leaf.cert.subject).issuer_name(root.cert.subject)
         .public_key(leaf.key.public_key()).serial_number(7).not_valid_before(NOW - timedelta(hours=1))  # type: ignore[arg-type]
         .not_valid_after(NOW + timedelta(days=1)).add_extension(x509.SubjectAlternativeName(list(sans)), False))
    return b.sign(root.key, hashes.SHA256())  # type: ignore[arg-type]


MULTI = _leaf_with_sans(x509.DNSName("vpn.example.test"), x509.RFC822Name("ops@Example.Test"),
                        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                        x509.IPAddress(ipaddress.ip_address("2001:db8::7")))


@pytest.mark.parametrize(("text", "matches"), [
    ("vpn.example.test", True), ("VPN.Example.Test", True), ("other.example.test", False),
    ("ops@example.test", True), ("OPS@example.test", False), ("192.0.2.7", True), ("192.0.2.8", False),
    ("2001:db8::7", True), ("CN=multi,O=ikepki test", True), ("O=ikepki test,CN=multi", False),
    ("CN=multi", False),
])
def test_identity_matches_san_rules(text: str, matches: bool) -> None:
    assert identity_matches(parse_identity(text), MULTI) is matches


def test_empty_dn_identity_names_only_an_empty_subject() -> None:
    """strongSwan sends the empty DN (a TPM device certificate's subject) as zero octets."""
    root = PKI.root
    key = make_leaf(root, "empty").key
    empty = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root.cert.subject)
             .public_key(key.public_key()).serial_number(8).not_valid_before(NOW - timedelta(hours=1))  # type: ignore[arg-type]
             .not_valid_after(NOW + timedelta(days=1))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName("d.example.test")]), True)
             .sign(root.key, hashes.SHA256()))  # type: ignore[arg-type]
    for data in (b"", b"\x30\x00"):
        assert identity_matches(Identity(IdType.DER_ASN1_DN, data), empty)
        assert not identity_matches(Identity(IdType.DER_ASN1_DN, data), MULTI)


def test_parse_identity_types() -> None:
    assert parse_identity("a@b.test").id_type == IdType.RFC822_ADDR
    assert parse_identity("b.test").id_type == IdType.FQDN
    assert parse_identity("10.0.0.1") == Identity(IdType.IPV4_ADDR, bytes([10, 0, 0, 1]))
    assert parse_identity("::1").id_type == IdType.IPV6_ADDR
    assert parse_identity("CN=x").id_type == IdType.DER_ASN1_DN


def test_san_for_identity_round_trips_and_dn_has_no_san() -> None:
    for ident in identities_of(MULTI)[1:]:
        assert san_for_identity(ident) in MULTI.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    with pytest.raises(IdentityError):
        san_for_identity(parse_identity("CN=x"))
    assert str(parse_identity("192.0.2.7")) == "192.0.2.7" and "multi" in str(identities_of(MULTI)[0])


def test_garbage_fqdn_bytes_do_not_match() -> None:
    assert not identity_matches(Identity(IdType.FQDN, b"\xff\xfe"), MULTI)


POLICY = """
rules:
  - name: ops
    match: {profile: 1.3.6.1.4.1.55555.1.1, san: ["*@example.test"], role: staff}
    local_ts: ["10.1.0.0/16", "10.2.0.0/24[tcp/443]"]
    remote_ts: ["192.168.5.0/24"]
  - name: any-guest
    match: {role: [guests, visitors]}
    local_ts: ["10.9.0.0/24"]
    remote_ts: ["0.0.0.0/0"]
"""


def test_policy_first_matching_rule(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    pol = Policy.load(tmp_path / "p.yaml")
    rule = pol.match(PKI.clients["alice"].cert)
    assert rule is not None and rule.name == "ops"
    bob = pol.match(PKI.clients["bob"].cert)
    assert bob is not None and bob.name == "any-guest"
    assert pol.match(PKI.clients["walt"].cert) is None  # staff but no policy OID
    unpoliced = make_leaf(PKI.root, "x", email="x@other.test", ou="staff", policies=(STAFF_POLICY_OID,))
    assert pol.match(unpoliced.cert) is None


def test_policy_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("rules: [1]")
    with pytest.raises(PolicyError):
        Policy.load(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("rules: [{local_ts: ['nonsense[[']}]")
    with pytest.raises((PolicyError, ValueError)):
        Policy.load(tmp_path / "p.yaml")


def _ts(a: str, b: str, proto: int = 0, lo: int = 0, hi: int = 65535) -> TrafficSelector:
    return TrafficSelector(7, proto, lo, hi, ipaddress.ip_address(a).packed, ipaddress.ip_address(b).packed)


def test_narrowing_intersects_addresses_protocols_and_ports() -> None:
    allowed = (Selector.parse("10.1.0.0/16"), Selector.parse("10.2.0.0/24[tcp/443]"))
    got = narrow((_ts("0.0.0.0", "255.255.255.255"),), allowed)
    assert [str(s) for s in got] == ["10.1.0.0/16", "10.2.0.0/24[6/443-443]"]
    assert narrow((_ts("10.1.2.0", "10.1.2.255", 17, 53, 53),), allowed)[0].proto == 17
    assert narrow((_ts("10.2.0.0", "10.2.0.255", 17),), allowed[1:]) == ()
    assert narrow((_ts("172.16.0.0", "172.16.0.255"),), allowed) == ()
    six = TrafficSelector(8, 0, 0, 65535, bytes(16), b"\xff" * 16)
    assert narrow((six,), allowed) == ()


def test_path_validation_rules() -> None:
    roots = [PKI.root.cert]
    ok = validate_path([PKI.clients["alice"].cert], roots, NOW)
    assert ok.issuer == PKI.root.cert
    for name, reason in [("mallory", "trusted root"), ("olga", "expired"), ("walt", "EKU")]:
        with pytest.raises(CertificateRejected, match=reason):
            validate_path([PKI.clients[name].cert], roots, NOW)
    with pytest.raises(CertificateRejected, match="expired"):
        validate_path([PKI.clients["alice"].cert], roots, NOW + timedelta(days=60))


def test_intermediate_must_be_a_ca_and_may_be_sent_by_peer() -> None:
    root = make_root("r2")
    inter = make_leaf(root, "not-a-ca", ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    leaf = make_leaf(inter, "leaf", email="l@example.test")
    with pytest.raises(CertificateRejected, match="not a CA"):
        validate_path([leaf.cert, inter.cert], [root.cert], NOW)
    with pytest.raises(CertificateRejected, match="trusted root"):
        validate_path([leaf.cert], [root.cert], NOW)


def test_dn_identity_matches_across_string_types() -> None:
    """RFC 4945 §3.1.5 / RFC 5280 §7.1: PrintableString vs UTF8String, case and spaces."""
    from asn1crypto.x509 import Name as Asn1Name

    printable = Asn1Name.build({"organization_name": "IKEPKI  test", "common_name": "Multi"}, use_printable=True)
    assert printable.dump() != MULTI.subject.public_bytes()
    assert identity_matches(Identity(IdType.DER_ASN1_DN, printable.dump()), MULTI)
    other = Asn1Name.build({"organization_name": "ikepki test", "common_name": "other"}, use_printable=True)
    assert not identity_matches(Identity(IdType.DER_ASN1_DN, other.dump()), MULTI)
    assert not identity_matches(Identity(IdType.DER_ASN1_DN, b"\x30\x03junk"), MULTI)


def test_dn_text_is_rfc4514_like_cryptography() -> None:
    name = x509.Name.from_rfc4514_string("CN=alice+UID=7,OU=staff,O=ikepki\\, test")
    assert str(Identity(IdType.DER_ASN1_DN, name.public_bytes())) == name.rfc4514_string()
