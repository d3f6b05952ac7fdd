"""EK certificate validation against swtpm's private manufacturer CA (RSA L-1 and ECC P-384 H-3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from tpm2_pytss import ESAPI

from ca.device_identity import (
    EK_SPKI_SHA256_ASSIGNER,
    TCG_TPM20_HW_TYPE,
    PermanentIdentifier,
    spki_sha256_hex,
)
from enrollment.attestation.device import TpmDevice
from enrollment.attestation.ek import (
    EK_ROOTS_SETTING,
    EkTrustStore,
    ek_public_area,
    validate_ek_certificate,
)
from enrollment.attestation.errors import AttestationError, Reason


@pytest.mark.parametrize(("kind", "handle"), [("rsa", 0x81010001), ("ecc", 0x81010016)])
def test_ek_certificate_validates_and_derives_identity(swtpm_device, ek_trust, kind, handle):
    with TpmDevice(swtpm_device.tcti, kind) as device:
        der = device.ek_certificate()
    ek = validate_ek_certificate(der, ek_trust, datetime.now(UTC))
    assert ek.fingerprint == spki_sha256_hex(ek.public_key)
    assert ek.permanent_identifier == PermanentIdentifier(ek.fingerprint, EK_SPKI_SHA256_ASSIGNER)
    assert ek.hardware_module.hw_type == TCG_TPM20_HW_TYPE
    assert ek.hardware_module.serial == ek.fingerprint.encode()
    assert ek.tpm is not None and ek.tpm.model == "swtpm" and ek.tpm.manufacturer.startswith("id:")
    if kind == "ecc":
        assert isinstance(ek.public_key, ec.EllipticCurvePublicKey) and ek.public_key.curve.name == "secp384r1"
    with ESAPI(swtpm_device.tcti) as ectx:  # the template rebuilt from the certificate == the TPM's EK
        public, _, _ = ectx.read_public(ectx.tr_from_tpmpublic(handle))
    assert ek_public_area(ek.public_key).marshal() == public.publicArea.marshal()


def test_ek_from_untrusted_manufacturer_fails(foreign_swtpm, ek_trust):
    with TpmDevice(foreign_swtpm.tcti) as device:
        der = device.ek_certificate()
    with pytest.raises(AttestationError) as err:
        validate_ek_certificate(der, ek_trust, datetime.now(UTC))
    assert err.value.reason is Reason.UNTRUSTED_EK


def test_ek_outside_validity_fails(swtpm_device, ek_trust):
    with TpmDevice(swtpm_device.tcti) as device:
        der = device.ek_certificate()
    with pytest.raises(AttestationError) as err:
        validate_ek_certificate(der, ek_trust, datetime(2001, 1, 1, tzinfo=UTC))
    assert err.value.reason is Reason.UNTRUSTED_EK


def test_trust_store_from_environment(monkeypatch, swtpm_device):
    monkeypatch.setenv(EK_ROOTS_SETTING, str(swtpm_device.ek_roots))
    store = EkTrustStore.from_environment()
    assert len(store.roots) == 1 and len(store.intermediates) == 1


def test_ek_without_tcg_eku_is_rejected(ca_factory):
    ca = ca_factory("fake manufacturer")
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(7)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(ca.key, hashes.SHA384())
    )
    store = EkTrustStore.from_certificates((ca.cert,))
    with pytest.raises(AttestationError) as err:
        validate_ek_certificate(cert.public_bytes(Encoding.DER), store, now)
    assert err.value.reason is Reason.EK_PROFILE


def test_garbage_ek_certificate_is_rejected(ek_trust):
    for data in (b"", b"\x30\x03\x02\x01\x01", b"x" * 20000):
        with pytest.raises(AttestationError) as err:
            validate_ek_certificate(data, ek_trust, datetime.now(UTC))
        assert err.value.reason is Reason.UNTRUSTED_EK
