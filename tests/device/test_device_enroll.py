"""``ikepki device enroll|renew`` (subprocess) against a real ``ikepki serve`` and a real swtpm: AK by
credential activation, ACME device-attest-01 with the acme library, machine certificate carrying the
EK-derived identifiers, the TPM holding the only copy of the key; renewal and blocking."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from device_helpers import DevicePki, device_cli, device_flow, ek_fingerprint_of
from tpm2_pytss.constants import TPMA_OBJECT
from tpm2_pytss.types import TPMT_PUBLIC

from ca.device_identity import (
    EK_SPKI_SHA256_ASSIGNER,
    ID_ON_HARDWARE_MODULE_NAME,
    ID_ON_PERMANENT_IDENTIFIER,
    TCG_TPM20_HW_TYPE,
    HardwareModuleName,
    PermanentIdentifier,
)
from enrollment.acme.cli import parse_patterns
from enrollment.attestation.ak_cert import OID_TCG_KP_AIK_CERTIFICATE
from enrollment.attestation.cli import AgentError, AgentTpm
from enrollment.attestation.tpm_structures import has_attributes, public_key_of

IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
HANDLE = 0x81000003


def _spki(key: object) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def _enroll(pki: DevicePki, tpm: object, out: Path, tmp: Path,
            eab: object | None = None) -> subprocess.CompletedProcess:
    return device_cli(pki, "enroll", "--acme", pki.directory, "--tpm", tpm.tcti, "--ca-bundle", pki.root_pem,  # type: ignore[attr-defined]
                      "--out", str(out), "--json", eab=eab or pki.eab(), tmp=tmp)


def _openssl_verify(pki: DevicePki, leaf: Path, untrusted: Path) -> None:
    proc = subprocess.run(["openssl", "verify", "-CAfile", pki.root_pem, "-untrusted", str(untrusted), str(leaf)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr


def _device_names(cert: x509.Certificate) -> tuple[PermanentIdentifier, HardwareModuleName]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    others = san.get_values_for_type(x509.OtherName)
    [permanent] = [PermanentIdentifier.from_other_name(o) for o in others if o.type_id == ID_ON_PERMANENT_IDENTIFIER]
    [hardware] = [HardwareModuleName.from_other_name(o) for o in others if o.type_id == ID_ON_HARDWARE_MODULE_NAME]
    assert len(list(san)) == 2  # nothing but the two EK-derived identifiers
    return permanent, hardware


def test_enroll_issues_a_tpm_bound_machine_certificate(pki: DevicePki, device_tpm: object, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _enroll(pki, device_tpm, out, tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["tpm_handle"] == hex(HANDLE)

    # the chain verifies with openssl; machine profile EKUs
    _openssl_verify(pki, out / "cert.pem", out / "chain.pem")
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert format(cert.serial_number, "x") == result["serial"]
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {IPSEC_IKE, ExtendedKeyUsageOID.CLIENT_AUTH}

    # identifiers derived from the TPM's EK (RFC 4043 permanentIdentifier, RFC 4108 hardwareModuleName)
    with AgentTpm(device_tpm.tcti) as dev:  # type: ignore[attr-defined]
        ek = x509.load_der_x509_certificate(dev.ek_certificate())
        tpm_public = dev.device_key_public(HANDLE)
    permanent, hardware = _device_names(cert)
    assert permanent == PermanentIdentifier.from_ek(ek.public_key())
    assert permanent.assigner == EK_SPKI_SHA256_ASSIGNER and len(permanent.value) == 64
    assert hardware == HardwareModuleName(TCG_TPM20_HW_TYPE, permanent.value.encode())

    # the store records the EK fingerprint and the device; the AK certificate is recorded too
    info = pki.store().get(cert.serial_number)
    assert info is not None and info.profile == "machine" and info.channel == "acme"
    assert info.ek_fingerprint == permanent.value and info.device_id == permanent.acme_value()
    ak_certs = x509.load_pem_x509_certificates((out / "ak-chain.pem").read_bytes())
    ak_info = pki.store().get(ak_certs[0].serial_number)
    assert ak_info is not None and ak_info.profile == "attestation-ak" and ak_info.ek_fingerprint == permanent.value
    assert OID_TCG_KP_AIK_CERTIFICATE in ak_certs[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    (tmp_path / "ak.pem").write_bytes(ak_certs[0].public_bytes(Encoding.PEM))
    (tmp_path / "att-ca.pem").write_bytes(ak_certs[1].public_bytes(Encoding.PEM))
    _openssl_verify(pki, tmp_path / "ak.pem", tmp_path / "att-ca.pem")

    # the key lives only in the TPM: fixedTPM | fixedParent | sensitiveDataOrigin, and it is the cert key
    assert tpm_public is not None
    area, _ = TPMT_PUBLIC.unmarshal(tpm_public)
    assert has_attributes(area, TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN)
    assert _spki(public_key_of(area)) == _spki(cert.public_key())
    key_ref = json.loads((out / "key.json").read_text())
    assert key_ref["handle"] == hex(HANDLE) and key_ref["type"] == "tpm2"
    for path in out.iterdir():  # the only private key on disk is the ACME account key, and it is another key
        if b"PRIVATE KEY" in path.read_bytes():
            assert path.name == "account-key.pem"
            account = load_pem_private_key(path.read_bytes(), None)
            assert _spki(account.public_key()) != _spki(cert.public_key())


def test_renewal_keeps_key_and_identity_and_stops_when_blocked(pki: DevicePki, victim_tpm: object,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _enroll(pki, victim_tpm, out, tmp_path).returncode == 0
    first = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())

    # inside the lifetime's first two thirds the server's renewalInfo says "not yet": nothing happens
    proc = device_cli(pki, "renew", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["renewed"] is False
    assert x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()) == first

    proc = device_cli(pki, "renew", "--out", str(out), "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    second = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert second.serial_number != first.serial_number
    assert _spki(second.public_key()) == _spki(first.public_key())  # same TPM key
    assert _device_names(second) == _device_names(first)  # same identity
    _openssl_verify(pki, out / "cert.pem", out / "chain.pem")
    fingerprint = ek_fingerprint_of(victim_tpm)
    issued = {i.serial for i in pki.issued(fingerprint)}
    assert {first.serial_number, second.serial_number} <= issued

    # after blocking the device, renewal and a fresh enrollment are refused and nothing is issued
    pki.block(fingerprint)
    proc = device_cli(pki, "renew", "--out", str(out), "--force")
    assert proc.returncode == 7 and "unauthorized" in proc.stderr and "blocked" in proc.stderr, proc.stderr
    with pytest.raises(AgentError) as refused, device_flow(pki, victim_tpm):  # a fresh AK enrollment
        pass
    assert refused.value.problem == "unauthorized" and "blocked" in refused.value.detail
    assert {i.serial for i in pki.issued(fingerprint)} == issued
    assert x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()) == second


def test_eab_policy_pattern_for_devices() -> None:
    assert parse_patterns("device:*,*.test") == ["device:*", "*.test"]


def test_eab_star_allows_a_device_and_a_names_only_key_says_what_is_missing(pki: DevicePki, device_tpm: object,
                                                                             tmp_path: Path) -> None:
    """``--identifiers '*'`` means everything, TPM devices included; a key for names only is refused
    with a message naming the pattern a device needs."""
    refused = _enroll(pki, device_tpm, tmp_path / "refused", tmp_path, eab=pki.eab("*.corp.test"))
    assert refused.returncode == 7, refused.stderr
    assert "device:*" in refused.stderr and "*.corp.test" in refused.stderr, refused.stderr
    star = _enroll(pki, device_tpm, tmp_path / "star", tmp_path, eab=pki.eab("*"))
    assert star.returncode == 0, star.stderr
    assert (tmp_path / "star" / "cert.pem").exists()
