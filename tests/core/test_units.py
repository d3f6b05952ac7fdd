"""Pure logic: PKCS#11 URIs, CSR decoding, CRL entry DER, profiles, config, ceremonies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.ceremony import Ceremony
from ca.config import CaSettings, ConfigSource
from ca.crl_entry import crl_entry_der
from ca.csr import parse_csr
from ca.errors import ErrorKind, PKIError
from ca.keys.pin import Pin, resolve_pin
from ca.keys.uri import Pkcs11UriError, build, parse
from ca.model import RevocationReason
from ca.profiles import BUILTIN_PROFILES, check_sans

REPO = Path(__file__).resolve().parents[2]
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@given(token=_text, label=_text, module=_text, pin_source=_text)
def test_pkcs11_uri_round_trip(token: str, label: str, module: str, pin_source: str) -> None:
    uri = build(token, label, module_path=module, pin_source=pin_source)
    again = parse(str(uri))
    assert (again.token, again.object, again.module_path, again.pin_source) == (token, label, module, pin_source)


def test_pkcs11_uri_rfc7512_examples() -> None:
    uri = parse("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my-key;type=private"
                "?pin-source=file:/etc/token_pin")
    assert uri.token == "The Software PKCS#11 Softtoken" and uri.object == "my-key"
    assert uri.pin_source == "file:/etc/token_pin"
    assert parse("pkcs11:id=%01%02;type=cert").id == b"\x01\x02"
    assert "pin-value" not in parse("pkcs11:object=k?pin-value=1234").without_secrets()


@pytest.mark.parametrize("bad", ["http://x", "pkcs11:token", "pkcs11:nosuch=1", "pkcs11:type=weird",
                                 "pkcs11:token=a;token=b", "pkcs11:" + "a" * 5000])
def test_pkcs11_uri_rejects(bad: str) -> None:
    with pytest.raises(Pkcs11UriError):
        parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_csr_parser_only_raises_pki_errors(data: bytes) -> None:
    try:
        parse_csr(data)
    except PKIError as exc:
        assert exc.kind is ErrorKind.BAD_CSR


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2000))
def test_csr_parser_survives_truncation(cut: int) -> None:
    from tests.core.csr_factory import SANS_FOR_PROFILE, make_csr, make_key

    der = x509.load_pem_x509_csr(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"])).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)
    try:
        parse_csr(der[:cut] if cut < len(der) else der + b"\x00")
    except PKIError as exc:
        assert exc.kind is ErrorKind.BAD_CSR


def test_csr_with_version_other_than_v1_is_bad_csr() -> None:
    """csr-version-1.der: hypothesis found that cryptography raises InvalidVersion (not ValueError)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.core.csr_factory import SANS_FOR_PROFILE, make_csr, make_key

    der = bytearray(x509.load_pem_x509_csr(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]))
                    .public_bytes(Encoding.DER))
    at = der.index(b"\x02\x01\x00")  # CertificationRequestInfo.version INTEGER 0
    der[at + 2] = 1
    with pytest.raises(PKIError) as info:
        parse_csr(bytes(der))
    assert info.value.kind is ErrorKind.BAD_CSR
    assert "version" in str(info.value)


@settings(max_examples=60, deadline=None)
@given(serial=st.integers(min_value=1, max_value=(1 << 159) - 1),
       seconds=st.integers(min_value=0, max_value=60 * 365 * 86400),
       reason=st.sampled_from([r for r in RevocationReason if r is not RevocationReason.removeFromCRL]),
       with_invalidity=st.booleans())
def test_crl_entry_der_matches_cryptography(serial: int, seconds: int, reason: RevocationReason,
                                            with_invalidity: bool) -> None:
    """The hand-built entry is byte-identical to the one cryptography's CRL builder makes."""
    at = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    invalidity = at - timedelta(hours=1) if with_invalidity else None
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at)
    if reason is not RevocationReason.unspecified:
        builder = builder.add_extension(x509.CRLReason(x509.ReasonFlags[_flag(reason)]), critical=False)
    if invalidity is not None:
        builder = builder.add_extension(x509.InvalidityDate(invalidity), critical=False)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=t")
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(at).next_update(at)
           .add_revoked_certificate(builder.build()).sign(key, hashes.SHA256()))
    ours = crl_entry_der(serial, at, reason.value, invalidity)
    assert ours in crl.tbs_certlist_bytes


def _flag(reason: RevocationReason) -> str:
    names = {"keyCompromise": "key_compromise", "cACompromise": "ca_compromise", "affiliationChanged":
             "affiliation_changed", "superseded": "superseded", "cessationOfOperation": "cessation_of_operation",
             "certificateHold": "certificate_hold", "privilegeWithdrawn": "privilege_withdrawn",
             "aACompromise": "aa_compromise"}
    return names[reason.name]


def test_revocation_reason_names() -> None:
    assert RevocationReason.parse("keyCompromise") is RevocationReason.keyCompromise
    assert RevocationReason.parse("key-compromise") is RevocationReason.keyCompromise
    with pytest.raises(ValueError, match="keyCompromise"):
        RevocationReason.parse("stolen")


def test_profile_san_rules() -> None:
    import ipaddress

    machine, user = BUILTIN_PROFILES["machine"], BUILTIN_PROFILES["user"]
    check_sans(machine, [x509.DNSName("a.example.test"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
    for bad_profile, names in ((machine, [x509.RFC822Name("a@b.test")]), (user, [x509.DNSName("a.test")]),
                               (machine, [x509.DNSName("*.example.test")]), (machine, []),
                               (machine, [x509.DNSName(f"h{i}.test") for i in range(40)]),
                               (user, [x509.RFC822Name("no-at-sign")])):
        with pytest.raises(PKIError) as err:
            check_sans(bad_profile, names)
        assert err.value.kind is ErrorKind.REJECTED_IDENTIFIER


def test_settings_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ikepki.yaml"
    path.write_text("https_port: 9443\nhttp_port: 9080\n")
    monkeypatch.setenv("IKEPKI_HTTPS_PORT", "7443")
    s = ConfigSource.load(path).settings(CaSettings)
    assert (s.https_port, s.http_port) == (7443, 9080)
    monkeypatch.setenv("IKEPKI_HTTP_PORT", "not-a-port")
    with pytest.raises(PKIError, match="http_port"):
        ConfigSource.load(path).settings(CaSettings)


def test_pin_by_reference_is_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pin").write_text("123456\n")
    pin = resolve_pin("file:pin", base=tmp_path)
    assert pin.reveal() == "123456" and "123456" not in repr(pin) and "123456" not in f"{pin}"
    monkeypatch.setenv("MY_PIN", "654321")
    assert resolve_pin("env:MY_PIN").reveal() == "654321"
    for bad in ("654321", "env:UNSET_PIN_VAR", "file:missing"):
        with pytest.raises(PKIError):
            resolve_pin(bad, base=tmp_path)
    assert isinstance(pin, Pin)


@pytest.mark.parametrize("path", sorted((REPO / "hsm-config").glob("**/*.yaml")), ids=lambda p: p.name)
def test_hsm_config_ceremonies_load(path: Path) -> None:
    ceremony = Ceremony.load(path)
    assert {"ec", "rsa"} <= set(ceremony.issuers)
    assert ceremony.token.label
    if path.parent.name == "profiles":
        assert ceremony.token.module and ceremony.token.pin_source


def test_bad_ceremony_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("root: {subject: 'CN=r', key: 'ec:P-521'}\nissuers: {}\n")
    with pytest.raises(PKIError, match="unsupported curve"):
        Ceremony.load(path)


def test_cli_principal_is_one_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CLI names its user ``<login>@cli`` in audit lines and records (ca.cli.common.cli_principal)."""
    import getpass

    from ca.cli.common import cli_principal

    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    assert cli_principal() == "alice@cli"

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert cli_principal() == "cli"
