"""The device-attest-01 plug-in for enrollment.acme, driven with a real swtpm attestation."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import josepy as jose
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca.clock import SystemClock
from ca.config import ConfigSource
from ca.deployment import Deployment
from enrollment.acme.model import Account, Authz, Challenge, Identifier
from enrollment.attestation.acme_challenge import DeviceAttest01Response
from enrollment.attestation.acme_validator import (
    DeviceAttest01Validator,
    acme_general_name,
    acme_validators,
    check_csr_key,
)
from enrollment.attestation.device import TpmDevice
from enrollment.attestation.ek import validate_ek_certificate
from enrollment.attestation.errors import AttestationError, Reason


def _account() -> tuple[Account, jose.JWK]:
    jwk = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    thumbprint = jose.b64encode(jwk.thumbprint()).decode()
    account = Account("acct1", thumbprint, jwk.public_key().to_partial_json(), "valid", [], None, datetime.now(UTC))
    return account, jwk


def _authz(kind: str, value: str) -> Authz:
    return Authz("authz1", "acct1", "order1", Identifier(kind, value), "pending", datetime.now(UTC) + timedelta(1))


@pytest.fixture()
def device_flow(swtpm_device, enroll, ek_trust):
    """Account, challenge and a TPM client answering it."""
    account, _ = _account()
    challenge = Challenge("ch1", "authz1", "device-attest-01", secrets.token_urlsafe(32), "pending", None, None)
    with TpmDevice(swtpm_device.tcti) as device:
        ak_cert = enroll(device)
        ek = validate_ek_certificate(device.ek_certificate(), ek_trust, datetime.now(UTC))
        device.create_device_key()
        csr = device.build_csr([ek.permanent_identifier])
        att_obj = device.att_obj(f"{challenge.token}.{account.thumbprint}", [ak_cert.public_bytes(Encoding.DER)])
    payload = DeviceAttest01Response.from_att_obj(att_obj).to_partial_json()
    return account, challenge, ek, csr, payload


@pytest.mark.parametrize("kind", ["permanent-identifier", "hardware-module"])
def test_validator_accepts_genuine_device(device_flow, attestation_ca, kind):
    account, challenge, ek, csr, payload = device_flow
    value = ek.permanent_identifier.acme_value() if kind == "permanent-identifier" else ek.hardware_module.acme_value()
    validator = DeviceAttest01Validator([attestation_ca.cert], SystemClock())
    result = validator.validate(challenge, _authz(kind, value), account, payload)
    assert result.ok, result.detail
    assert result.evidence["device_id"] == ek.permanent_identifier.acme_value()
    assert result.evidence["ek_fingerprint"] == ek.fingerprint
    check_csr_key(result.evidence, csr.public_key())
    with pytest.raises(AttestationError) as err:
        check_csr_key(result.evidence, ec.generate_private_key(ec.SECP256R1()).public_key())
    assert err.value.reason is Reason.KEY_MISMATCH
    assert acme_general_name(kind, value) in [
        ek.permanent_identifier.to_other_name(),
        ek.hardware_module.to_other_name(),
    ]


def test_validator_rejects_other_account_and_identifier(device_flow, attestation_ca):
    account, challenge, ek, _, payload = device_flow
    validator = DeviceAttest01Validator([attestation_ca.cert], SystemClock())
    other_account, _ = _account()
    result = validator.validate(challenge, _authz("permanent-identifier", ek.permanent_identifier.acme_value()),
                                other_account, payload)  # fmt: skip
    assert not result.ok and result.problem_type == "badAttestationStatement"
    assert result.detail.startswith("extradata-mismatch")
    result = validator.validate(challenge, _authz("permanent-identifier", "f" * 64), account, payload)
    assert not result.ok and result.detail.startswith("identifier-mismatch")
    result = validator.validate(challenge, _authz("permanent-identifier", "a/b/c"), account, payload)
    assert not result.ok and result.problem_type == "malformed"
    result = validator.validate(challenge, _authz("permanent-identifier", "x"), account, {"attObj": 7})
    assert not result.ok and result.detail.startswith("malformed")


def test_acme_validators_from_deployment_config(tmp_path: Path, attestation_ca):
    (tmp_path / "attestation-ca.pem").write_bytes(attestation_ca.cert.public_bytes(Encoding.PEM))
    unconfigured = Deployment(tmp_path, ConfigSource({}), SystemClock())
    assert acme_validators(unconfigured) == []
    configured = Deployment(
        tmp_path, ConfigSource({"attestation": {"ak_ca_certs": "attestation-ca.pem"}}), SystemClock()
    )
    [validator] = acme_validators(configured)
    assert validator.type == "device-attest-01"
