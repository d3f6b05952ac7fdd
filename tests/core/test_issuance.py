"""Issuance through SoftHSM for every profile and client key type; every result verified by
openssl and pkilint (independent checkers), keys reported non-extractable by the token."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca.authority import Authority
from ca.csr import parse_csr
from ca.keys.signer import KeySpec
from ca.model import IssuanceRequest, Requester
from ca.profiles import EKU_IPSEC_IKE
from tests.core.csr_factory import KEY_TYPES, SANS_FOR_PROFILE, make_csr, make_key

PKILINT = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lint_pkix_cert")


def openssl_verify(tmp_path: Path, root: x509.Certificate, chain: tuple[x509.Certificate, ...],
                   leaf: x509.Certificate, purpose: str | None = None) -> None:
    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    cmd = ["openssl", "verify", "-x509_strict", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
           str(tmp_path / "chain.pem")]
    if purpose:
        cmd += ["-purpose", purpose]
    proc = subprocess.run([*cmd, str(tmp_path / "leaf.pem")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), proc.stdout + proc.stderr


def pkilint(tmp_path: Path, cert: x509.Certificate, allowed: tuple[str, ...] = ()) -> None:
    """No pkilint finding at WARNING or above, except the named ``allowed`` ones."""
    path = tmp_path / "lint.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    proc = subprocess.run([PKILINT, "lint", "-s", "WARNING", "-f", "JSON", str(path)], capture_output=True, text=True,
                          check=False)
    import json

    report = json.loads(proc.stdout or "{}")
    findings = [f"{r['validator']}: {f['code']} {f.get('message')}" for r in report.get("results", [])
                for f in r.get("finding_descriptions", []) if f"{f['code']} {f.get('message')}" not in allowed]
    assert not findings and not proc.stderr.strip(), f"pkilint findings: {findings}\n{proc.stderr}"


@pytest.mark.parametrize("profile", ["machine", "user", "gateway"])
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_issue_every_profile_and_key_type(deployment, tmp_path: Path, profile: str, key_type: str) -> None:
    csr = parse_csr(make_csr(make_key(key_type), SANS_FOR_PROFILE[profile]))
    issued = deployment.authority.issue(IssuanceRequest(csr, profile, Requester("test", "pytest")))
    cert = issued.certificate
    openssl_verify(tmp_path, deployment.root, issued.chain, cert)
    pkilint(tmp_path, cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert EKU_IPSEC_IKE in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert (ExtendedKeyUsageOID.SERVER_AUTH in eku) == (profile == "gateway")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    expected = deployment.profiles[profile].default_lifetime
    assert expected <= lifetime <= expected + timedelta(minutes=2)
    assert cert.serial_number.bit_length() >= 64
    stored = deployment.store.get(cert.serial_number)
    assert stored is not None and stored.der == cert.public_bytes(Encoding.DER) and stored.profile == profile


@pytest.mark.parametrize("profile", ["machine", "gateway"])
def test_issue_from_rsa_issuing_ca(deployment, tmp_path: Path, profile: str) -> None:
    """The RSA-3072 issuing CA (SCEP, legacy clients) signs through the HSM too."""
    csr = parse_csr(make_csr(make_key("rsa-2048"), SANS_FOR_PROFILE[profile]))
    issued = deployment.authority.issue(IssuanceRequest(csr, profile, Requester("test", "pytest")), issuer="rsa")
    assert issued.chain[0] == deployment.issuers["rsa"].certificate
    openssl_verify(tmp_path, deployment.root, issued.chain, issued.certificate)
    pkilint(tmp_path, issued.certificate)


def test_internal_profiles_lint_clean(deployment, tmp_path: Path) -> None:
    for name in deployment.service_key_names():
        svc = deployment.service_key(name)
        issuer = deployment.issuers[svc.issuer_id]
        openssl_verify(tmp_path, deployment.root, issuer.chain_for_leaf(), svc.certificate)
        pkilint(tmp_path, svc.certificate)
    tls = x509.load_pem_x509_certificates(deployment.tls_files[0].read_bytes())
    openssl_verify(tmp_path, deployment.root, tuple(tls[1:]), tls[0], purpose="sslserver")
    # "localhost" is a valid single-label host name (RFC 1123) that pkilint's preferred-name check rejects;
    # the HTTPS listener needs it for https://localhost:8443.
    pkilint(tmp_path, tls[0], allowed=('pkix.invalid_domain_name_syntax Invalid domain name syntax: "localhost"',))


def test_attestation_ak_certificate_goes_through_the_authority(deployment, tmp_path: Path) -> None:
    """AK certificates: HSM attestation CA, Authority serial + lint, store row, audit line; pkilint and
    openssl accept them and the verifier's own profile check (WebAuthn L2 §8.3.1) still does."""
    from ca.device_identity import HardwareModuleName, PermanentIdentifier, TpmDescription, spki_sha256_hex
    from ca.model import CertStatus
    from enrollment.attestation.ak_cert import OID_TCG_KP_AIK_CERTIFICATE, check_ak_certificate, issue_ak_certificate
    from enrollment.attestation.credential import ActivatedAk
    from enrollment.attestation.ek import EkIdentity

    for ak_key_type in ("ec-p256", "rsa-2048"):
        ek_pub, ak_pub = make_key("ec-p256").public_key(), make_key(ak_key_type).public_key()
        ek = EkIdentity(deployment.root, ek_pub, spki_sha256_hex(ek_pub), PermanentIdentifier.from_ek(ek_pub),
                        HardwareModuleName.from_ek(ek_pub), TpmDescription("id:53544D20", "swtpm", "id:20191023"))
        audit_lines = len(deployment.audit.path.read_text().splitlines())
        issued = issue_ak_certificate(deployment.authority, ActivatedAk(ek, b"", b"", ak_pub),
                                      Requester("attestation", "pytest"))
        cert = issued.certificate
        assert issued.chain == (deployment.issuers["attestation"].certificate,)
        openssl_verify(tmp_path, deployment.root, issued.chain, cert)
        pkilint(tmp_path, cert)
        info = check_ak_certificate(cert)
        assert info.permanent_identifier == ek.permanent_identifier and info.tpm == ek.tpm
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
            [OID_TCG_KP_AIK_CERTIFICATE]
        stored = deployment.store.get(cert.serial_number)
        assert stored is not None and stored.status is CertStatus.valid and stored.profile == "attestation-ak"
        assert stored.ek_fingerprint == ek.fingerprint and stored.device_id == ek.permanent_identifier.acme_value()
        assert stored.issuer_id == "attestation" and stored.der == cert.public_bytes(Encoding.DER)
        lines = deployment.audit.path.read_text().splitlines()
        assert len(lines) == audit_lines + 1 and f'"serial":"{cert.serial_number:x}"' in lines[-1]


def test_lint_failure_signs_nothing_with_the_issuer_key_and_records_nothing(deployment, monkeypatch) -> None:
    """Boulder's shape: the throwaway-key copy is linted first, so a certificate that fails lint is never
    signed by the HSM key, never recorded, never returned."""
    import ca.authority as authority_module
    from ca.errors import ErrorKind, PKIError
    from ca.issuer import Issuer
    from ca.keys.signer import SigningKey

    real = deployment.issuers["ec"]
    signed: list[bytes] = []

    class CountingKey(type(real.key.key)):  # type: ignore[misc]
        def __init__(self) -> None:
            pass

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(real.key.key, name)

        def sign(self, data, algorithm):  # type: ignore[no-untyped-def]
            signed.append(data)
            return real.key.key.sign(data, algorithm)

        def public_key(self):  # type: ignore[no-untyped-def]
            return real.key.key.public_key()

        @property
        def curve(self):  # type: ignore[no-untyped-def]
            return real.key.key.curve

        @property
        def key_size(self) -> int:
            return real.key.key.key_size

    issuer = Issuer("ec", real.certificate, SigningKey(real.key.uri, CountingKey()), real.chain, real.root, real.urls)
    auth = Authority({"ec": issuer}, deployment.store, deployment.profiles, deployment.audit, deployment.clock)
    csr = parse_csr(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]))
    auth.issue(IssuanceRequest(csr, "machine", Requester("test", "pytest")))
    assert len(signed) == 1  # a good certificate: exactly one HSM signature

    good = authority_module._extensions
    monkeypatch.setattr(authority_module, "_extensions",
                        lambda t: [(e, c) for e, c in good(t) if not isinstance(e, x509.KeyUsage)])
    before = deployment.store.count()
    with pytest.raises(PKIError) as err:
        auth.issue(IssuanceRequest(csr, "machine", Requester("test", "pytest")))
    assert err.value.kind is ErrorKind.INTERNAL and "lint" in err.value.detail
    assert len(signed) == 1 and deployment.store.count() == before


def test_ca_keys_are_non_extractable_on_the_token(deployment) -> None:
    labels = ["root-ca", *(f"issuing-{i}" for i in deployment.issuers), *deployment.service_key_names()]
    for label in labels:
        protection = deployment.token.protection(label)
        assert protection.sensitive and not protection.extractable and protection.never_extractable, label


@pytest.mark.parametrize("spec", ["ec:P-256", "ec:P-384", "rsa:3072", "rsa-pss:3072", "rsa:4096", "rsa-pss:4096"])
def test_signer_algorithms_on_softhsm(deployment, tmp_path: Path, spec: str) -> None:
    """Every supported CA key type signs a CA certificate that openssl verifies."""
    from datetime import UTC, datetime

    from ca.ceremony import build_ca_certificate

    token = deployment.token
    label = f"test-{spec.replace(':', '-')}"
    if token.has_key(label):
        token.destroy(label)
    token.generate(KeySpec.parse(spec), label)
    try:
        assert token.protection(label).non_extractable
        key = token.signing_key(label, rsa_pss=spec.startswith("rsa-pss"))
        name = x509.Name.from_rfc4514_string(f"CN={label}")
        cert = build_ca_certificate(name, key, name, key, datetime.now(UTC), 1, None, None, None)
        cert.verify_directly_issued_by(cert)
        (tmp_path / "ca.pem").write_bytes(cert.public_bytes(Encoding.PEM))
        proc = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "ca.pem")],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if spec.startswith("rsa-pss"):
            assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS
    finally:
        token.destroy(label)


def test_strongswan_pki_csr_with_non_der_attribute_order(deployment, tmp_path: Path) -> None:
    """strongSwan's `pki --req` puts extensionRequest before challengePassword (not DER
    order); cryptography rejects it, the fallback parser verifies the original bytes."""
    key = tmp_path / "k.pem"
    subprocess.run(["pki", "--gen", "--type", "rsa", "--size", "2048", "--outform", "pem"], stdout=key.open("wb"),
                   check=True, stderr=subprocess.DEVNULL)
    proc = subprocess.run(["pki", "--req", "--in", str(key), "--type", "priv", "--dn", "O=Example, CN=h1.example.test",
                           "--san", "h1.example.test", "--password", "s3cret", "--outform", "pem"],
                          capture_output=True, check=True)
    csr = parse_csr(proc.stdout)
    assert csr.challenge_password == "s3cret"
    issued = deployment.authority.issue(IssuanceRequest(csr, "machine", Requester("test", "pytest")))
    assert issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == ["h1.example.test"]


def test_blocked_device_is_refused_even_before_its_first_certificate(deployment) -> None:
    """Blocking `ek:<fingerprint>` refuses issuance for that EK; other devices are unaffected."""
    import secrets as _secrets

    from ca.errors import ErrorKind, PKIError

    fingerprint = _secrets.token_hex(32)
    deployment.authority.block_device(f"ek:{fingerprint}", Requester("test", "pytest"), "stolen")
    csr = parse_csr(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]))
    before = deployment.store.count()
    with pytest.raises(PKIError) as err:
        deployment.authority.issue(IssuanceRequest(csr, "machine", Requester("test", "pytest"),
                                                   ek_fingerprint=fingerprint))
    assert err.value.kind is ErrorKind.BLOCKED and deployment.store.count() == before
    deployment.authority.issue(IssuanceRequest(csr, "machine", Requester("test", "pytest"),
                                               ek_fingerprint=_secrets.token_hex(32)))


def test_posture_mark_policy_oid_and_evidence_cap(deployment, tmp_path: Path) -> None:
    """Issue 17: the posture policy OID next to the profile's, notAfter capped at the evidence expiry,
    pkilint clean; expired evidence or an unknown posture OID issues nothing."""
    from ca.errors import PKIError
    from ca.model import CertificateQuery, PostureMark
    from ca.oids import POSTURE_COMPLIANT, POSTURE_QUARANTINE

    now = deployment.clock.now()
    for oid in (POSTURE_COMPLIANT, POSTURE_QUARANTINE):
        expires = now + timedelta(minutes=30)
        csr = parse_csr(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]))
        cert = deployment.authority.issue(IssuanceRequest(csr, "machine", Requester("test", "pytest"),
                                                          posture=PostureMark(oid, expires))).certificate
        policies = [p.policy_identifier for p in
                    cert.extensions.get_extension_for_class(x509.CertificatePolicies).value]
        assert policies == [deployment.profiles["machine"].policy_oid, oid]
        assert cert.not_valid_after_utc <= expires
        pkilint(tmp_path, cert)
    def issued() -> int:
        return len(deployment.store.search(CertificateQuery(profile="machine", limit=100_000)))

    before = issued()
    for mark in (PostureMark(POSTURE_COMPLIANT, now - timedelta(seconds=1)),
                 PostureMark(x509.ObjectIdentifier("1.3.6.1.4.1.32473.7.4.99"), now + timedelta(hours=1))):
        csr = parse_csr(make_csr(make_key("ec-p256"), SANS_FOR_PROFILE["machine"]))
        with pytest.raises(PKIError):
            deployment.authority.issue(IssuanceRequest(csr, "machine", Requester("test", "pytest"), posture=mark))
    assert issued() == before  # nothing recorded
