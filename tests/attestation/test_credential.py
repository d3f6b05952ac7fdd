"""AK enrollment by credential activation against a real swtpm (RSA low-range and ECC P-384 EKs)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from tpm2_pytss.constants import TPMA_OBJECT

from enrollment.attestation.ak_cert import (
    OID_TCG_KP_AIK_CERTIFICATE,
    check_ak_certificate,
)
from enrollment.attestation.clock import FixedClock
from enrollment.attestation.credential import CredentialActivation, CredentialBlob, CredentialChallenge
from enrollment.attestation.device import TpmDevice
from enrollment.attestation.errors import AttestationError, Reason
from enrollment.attestation.repository import InMemoryChallengeRepository
from enrollment.attestation.tpm_structures import parse_public_area


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_credential_activation_round_trip(swtpm_device, activation, attestation_ca, kind, tmp_path: Path):
    with TpmDevice(swtpm_device.tcti, kind) as device:
        ek_der, ak_public = device.ek_certificate(), device.ak_public()
        blob = activation.start(ek_der, ak_public)
        secret = device.activate_credential(blob.id_object, blob.encrypted_secret)
    activated = activation.finish(blob.challenge_id, secret)
    assert activated.ak_public == ak_public
    cert = attestation_ca.sign_ak(activated)
    info = check_ak_certificate(cert)
    assert info.permanent_identifier == activated.ek.permanent_identifier
    assert info.hardware_module == activated.ek.hardware_module
    assert info.tpm == activated.ek.tpm
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    assert OID_TCG_KP_AIK_CERTIFICATE in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # independent check of the AK certificate by openssl
    (tmp_path / "ca.pem").write_bytes(attestation_ca.cert.public_bytes(Encoding.PEM))
    (tmp_path / "ak.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "ak.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_wrong_secret_fails_and_burns_the_challenge(swtpm_device, activation):
    with TpmDevice(swtpm_device.tcti) as device:
        blob = activation.start(device.ek_certificate(), device.ak_public())
        secret = device.activate_credential(blob.id_object, blob.encrypted_secret)
    with pytest.raises(AttestationError) as err:
        activation.finish(blob.challenge_id, bytes(32))
    assert err.value.reason is Reason.WRONG_SECRET
    with pytest.raises(AttestationError) as err:
        activation.finish(blob.challenge_id, secret)  # single use, even after a failure
    assert err.value.reason is Reason.REPLAY


def test_credential_for_another_ak_name_cannot_be_activated(swtpm_device, activation):
    """A credential bound to another AK name does not decrypt in the TPM (the integrity HMAC fails)."""
    with TpmDevice(swtpm_device.tcti) as device:
        ak = parse_public_area(device.ak_public())
        other = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
        ak.unique.ecc.x, ak.unique.ecc.y = other.x.to_bytes(32, "big"), other.y.to_bytes(32, "big")
        blob = activation.start(device.ek_certificate(), bytes(ak.marshal()))
        with pytest.raises(Exception, match="integrity"):
            device.activate_credential(blob.id_object, blob.encrypted_secret)


def test_expired_challenge(swtpm_device, ek_trust):
    clock = FixedClock(datetime.now(UTC))
    activation = CredentialActivation(
        ek_trust,
        InMemoryChallengeRepository[CredentialChallenge](),
        clock,
        ttl=timedelta(seconds=30),
    )
    with TpmDevice(swtpm_device.tcti) as device:
        blob = activation.start(device.ek_certificate(), device.ak_public())
        secret = device.activate_credential(blob.id_object, blob.encrypted_secret)
    clock.advance(timedelta(seconds=31))
    with pytest.raises(AttestationError) as err:
        activation.finish(blob.challenge_id, secret)
    assert err.value.reason is Reason.EXPIRED


def test_unknown_challenge(activation):
    with pytest.raises(AttestationError) as err:
        activation.finish("nope", bytes(32))
    assert err.value.reason is Reason.UNKNOWN_CHALLENGE


@pytest.mark.parametrize(
    "cleared",
    [TPMA_OBJECT.FIXEDTPM, TPMA_OBJECT.FIXEDPARENT, TPMA_OBJECT.SENSITIVEDATAORIGIN, TPMA_OBJECT.RESTRICTED,
     TPMA_OBJECT.SIGN_ENCRYPT],
)  # fmt: skip
def test_ak_without_required_attribute_is_rejected(swtpm_device, activation, cleared):
    with TpmDevice(swtpm_device.tcti) as device:
        ek_der = device.ek_certificate()
        ak = parse_public_area(device.ak_public())
    ak.objectAttributes = TPMA_OBJECT(int(ak.objectAttributes) & ~int(cleared))
    with pytest.raises(AttestationError) as err:
        activation.start(ek_der, bytes(ak.marshal()))
    assert err.value.reason is Reason.AK_ATTRIBUTES


def test_ak_that_can_decrypt_is_rejected(swtpm_device, activation):
    with TpmDevice(swtpm_device.tcti) as device:
        ek_der = device.ek_certificate()
        ak = parse_public_area(device.ak_public())
    ak.objectAttributes = TPMA_OBJECT(int(ak.objectAttributes) | int(TPMA_OBJECT.DECRYPT))
    with pytest.raises(AttestationError) as err:
        activation.start(ek_der, bytes(ak.marshal()))
    assert err.value.reason is Reason.AK_ATTRIBUTES


def test_untrusted_ek_is_rejected_at_start(foreign_swtpm, activation):
    with TpmDevice(foreign_swtpm.tcti) as device, pytest.raises(AttestationError) as err:
        activation.start(device.ek_certificate(), device.ak_public())
    assert err.value.reason is Reason.UNTRUSTED_EK


def test_credential_blob_wire_form_round_trips(swtpm_device, activation):
    with TpmDevice(swtpm_device.tcti) as device:
        blob = activation.start(device.ek_certificate(), device.ak_public())
        wire = blob.to_json()
        assert set(wire) == {"challengeId", "idObject", "encryptedSecret", "expires"}
        received = CredentialBlob.from_json(wire)
        assert received == blob
        secret = device.activate_credential(received.id_object, received.encrypted_secret)
    activation.finish(blob.challenge_id, secret)
    with pytest.raises(AttestationError) as err:
        CredentialBlob.from_json({"challengeId": "x", "idObject": 5})
    assert err.value.reason is Reason.MALFORMED
