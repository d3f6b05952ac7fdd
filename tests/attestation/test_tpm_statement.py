"""device-attest-01 ``tpm`` attestation: full attObj from a real swtpm, and each rejection reason."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import josepy as jose
import pytest
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMS_SIGNATURE_ECC,
    TPMT_PUBLIC,
    TPMT_SIGNATURE,
    TPMU_SIGNATURE,
)

from ca.device_identity import HardwareModuleName, PermanentIdentifier
from enrollment.attestation.acme_challenge import DeviceAttest01, DeviceAttest01Response
from enrollment.attestation.clock import FixedClock
from enrollment.attestation.credential import ActivatedAk
from enrollment.attestation.device import TpmDevice
from enrollment.attestation.ek import EkIdentity, validate_ek_certificate
from enrollment.attestation.errors import AttestationError, Reason
from enrollment.attestation.repository import InMemoryChallengeRepository
from enrollment.attestation.tpm_statement import (
    AttestationChallenge,
    AttestationResult,
    DeviceAttestationVerifier,
    verify_tpm_attestation,
)

ACCOUNT_KEY = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
SECOND_KEY_HANDLE = 0x81000004


def key_authorization() -> str:
    """A fresh device-attest-01 challenge's key authorization (RFC 8555 §8.1) via the acme classes."""
    token = jose.b64encode(secrets.token_bytes(32)).decode()
    challenge = challenges.Challenge.from_json({"type": "device-attest-01", "token": token})
    assert isinstance(challenge, DeviceAttest01)
    return challenge.validation(ACCOUNT_KEY)


@dataclass(frozen=True)
class Attested:
    att_obj: bytes
    key_authorization: str
    csr: x509.CertificateSigningRequest
    ak_cert: x509.Certificate
    ek: EkIdentity

    @property
    def identifier(self) -> PermanentIdentifier:
        return self.ek.permanent_identifier

    @property
    def hardware_module(self) -> HardwareModuleName:
        return self.ek.hardware_module


@pytest.fixture()
def attested(swtpm_device, enroll, ek_trust) -> Attested:
    with TpmDevice(swtpm_device.tcti) as device:
        ak_cert = enroll(device)
        ek = validate_ek_certificate(device.ek_certificate(), ek_trust, datetime.now(UTC))
        device.create_device_key()
        csr = device.build_csr([ek.permanent_identifier, ek.hardware_module])
        keyauth = key_authorization()
        att_obj = device.att_obj(keyauth, [ak_cert.public_bytes(Encoding.DER)])
    return Attested(att_obj, keyauth, csr, ak_cert, ek)


def verify(att: Attested, roots: list[x509.Certificate], **overrides: object) -> AttestationResult:
    args: dict[str, object] = {
        "key_authorization": att.key_authorization,
        "csr_public_key": att.csr.public_key(),
        "attestation_roots": roots,
        "now": datetime.now(UTC),
        "expected_identifier": att.identifier,
    }
    args.update(overrides)
    return verify_tpm_attestation(att.att_obj, **args)  # type: ignore[arg-type]


def reason_of(call: Callable[[], object]) -> Reason:
    with pytest.raises(AttestationError) as err:
        call()
    return err.value.reason


def mutate(att_obj: bytes, **statement: object) -> bytes:
    top = cbor2.loads(att_obj)
    top["attStmt"].update(statement)
    return cbor2.dumps(top)


def test_full_attestation_verifies(attested, attestation_ca, tmp_path: Path):
    assert attested.csr.is_signature_valid  # the CSR was signed inside the TPM
    result = verify(attested, [attestation_ca.cert])
    assert result.permanent_identifier == attested.identifier
    assert result.hardware_module == attested.hardware_module
    assert result.ek_fingerprint == attested.identifier.value
    assert result.ak_cert_serial == attested.ak_cert.serial_number
    assert result.device_public_key == attested.csr.public_key()
    assert result.tpm is not None and result.tpm.model == "swtpm"
    # by hardware-module identifier too
    verify(attested, [attestation_ca.cert], expected_identifier=attested.hardware_module)
    # independent check of sig over certInfo by openssl
    statement = cbor2.loads(attested.att_obj)["attStmt"]
    (tmp_path / "certinfo").write_bytes(statement["certInfo"])
    (tmp_path / "sig").write_bytes(statement["sig"])
    (tmp_path / "ak.pem").write_bytes(
        attested.ak_cert.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "ak.pem"),
         "-signature", str(tmp_path / "sig"), str(tmp_path / "certinfo")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "Verified OK" in out.stdout


def test_acme_response_round_trip(attested, attestation_ca):
    response = DeviceAttest01Response.from_att_obj(attested.att_obj)
    wire = response.json_dumps()
    assert set(json.loads(wire)) == {"attObj"}
    parsed = challenges.ChallengeResponse.from_json({"type": "device-attest-01", **response.to_partial_json()})
    assert isinstance(parsed, DeviceAttest01Response)
    verify(replace(attested, att_obj=parsed.att_obj_bytes()), [attestation_ca.cert])


def test_software_key_csr_is_rejected(attested, attestation_ca):
    software = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(software, hashes.SHA256())
    assert reason_of(lambda: verify(attested, [attestation_ca.cert], csr_public_key=csr.public_key())) is (
        Reason.KEY_MISMATCH
    )


def test_software_ak_is_rejected(attested, attestation_ca, ca_factory):
    """A forged statement: software 'AK' with a self-made AK certificate signs a genuine-looking certInfo."""
    rogue_ca = ca_factory("rogue")
    fake_ak = ec.generate_private_key(ec.SECP256R1())
    statement = cbor2.loads(attested.att_obj)["attStmt"]
    activated = ActivatedAk(attested.ek, b"", b"", fake_ak.public_key())
    rogue_cert = rogue_ca.sign_ak(activated)
    sig = fake_ak.sign(statement["certInfo"], ec.ECDSA(hashes.SHA256()))
    forged = mutate(attested.att_obj, x5c=[rogue_cert.public_bytes(Encoding.DER)], sig=sig)
    assert reason_of(lambda: verify(replace(attested, att_obj=forged), [attestation_ca.cert])) is Reason.UNTRUSTED_AK
    # same forgery presented with the genuine AK certificate: the signature does not verify
    forged = mutate(attested.att_obj, sig=sig)
    assert reason_of(lambda: verify(replace(attested, att_obj=forged), [attestation_ca.cert])) is Reason.BAD_SIGNATURE


def test_extradata_for_another_challenge_is_rejected(attested, attestation_ca):
    other = key_authorization()
    assert reason_of(lambda: verify(attested, [attestation_ca.cert], key_authorization=other)) is (
        Reason.EXTRADATA_MISMATCH
    )


def test_tampered_cert_info_is_rejected(attested, attestation_ca):
    statement = cbor2.loads(attested.att_obj)["attStmt"]
    info = bytearray(statement["certInfo"])
    info[-1] ^= 1
    tampered = mutate(attested.att_obj, certInfo=bytes(info))
    assert reason_of(lambda: verify(replace(attested, att_obj=tampered), [attestation_ca.cert])) is (
        Reason.BAD_SIGNATURE
    )


def test_replay_against_consumed_challenge(attested, attestation_ca, clock):
    verifier = DeviceAttestationVerifier(
        [attestation_ca.cert], InMemoryChallengeRepository[AttestationChallenge](), clock
    )
    challenge = verifier.new_challenge(attested.identifier)
    result = verifier.verify(challenge.id, attested.att_obj, attested.key_authorization, attested.csr.public_key())
    assert result.permanent_identifier == attested.identifier
    again = lambda: verifier.verify(  # noqa: E731
        challenge.id, attested.att_obj, attested.key_authorization, attested.csr.public_key()
    )
    assert reason_of(again) is Reason.REPLAY


def test_expired_attestation_challenge(attested, attestation_ca):
    clock = FixedClock(datetime.now(UTC))
    verifier = DeviceAttestationVerifier(
        [attestation_ca.cert], InMemoryChallengeRepository[AttestationChallenge](), clock
    )
    challenge = verifier.new_challenge(attested.identifier, ttl=timedelta(seconds=5))
    clock.advance(timedelta(seconds=6))
    call = lambda: verifier.verify(  # noqa: E731
        challenge.id, attested.att_obj, attested.key_authorization, attested.csr.public_key()
    )
    assert reason_of(call) is Reason.EXPIRED


def test_another_devices_identifier_is_rejected(attested, attestation_ca, foreign_swtpm):
    with TpmDevice(foreign_swtpm.tcti) as foreign:
        foreign_ek = x509.load_der_x509_certificate(foreign.ek_certificate())
    other = PermanentIdentifier.from_ek(foreign_ek.public_key())
    assert other != attested.identifier
    assert reason_of(lambda: verify(attested, [attestation_ca.cert], expected_identifier=other)) is (
        Reason.IDENTIFIER_MISMATCH
    )


def test_pub_area_of_another_key_is_rejected(attested, attestation_ca, swtpm_device):
    with TpmDevice(swtpm_device.tcti) as device:
        other_pub = device.create_device_key(SECOND_KEY_HANDLE)
        other_csr = device.build_csr(handle=SECOND_KEY_HANDLE)
    swapped = mutate(attested.att_obj, pubArea=other_pub)
    call = lambda: verify(  # noqa: E731
        replace(attested, att_obj=swapped), [attestation_ca.cert], csr_public_key=other_csr.public_key()
    )
    assert reason_of(call) is Reason.NAME_MISMATCH


def test_duplicable_key_is_rejected(swtpm_device, enroll, attestation_ca):
    """A key without fixedTPM/fixedParent, certified by the genuine AK, is not accepted."""
    with TpmDevice(swtpm_device.tcti) as device:
        ak_cert = enroll(device)
        device.create_device_key()  # makes sure the SRK exists
    attributes = TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT
    with ESAPI(swtpm_device.tcti) as ectx:
        srk = ectx.tr_from_tpmpublic(0x81000001)
        template = TPM2B_PUBLIC(TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attributes))
        private, public, _, _, _ = ectx.create(srk, TPM2B_SENSITIVE_CREATE(), template)
        transient = ectx.load(srk, private, public)
        with contextlib.suppress(TSS2_Exception):
            ectx.evict_control(ESYS_TR.OWNER, ectx.tr_from_tpmpublic(SECOND_KEY_HANDLE), SECOND_KEY_HANDLE)
        ectx.evict_control(ESYS_TR.OWNER, transient, SECOND_KEY_HANDLE)
        ectx.flush_context(transient)
    with TpmDevice(swtpm_device.tcti) as device:
        keyauth = key_authorization()
        att_obj = device.att_obj(keyauth, [ak_cert.public_bytes(Encoding.DER)], handle=SECOND_KEY_HANDLE)
        csr = device.build_csr(handle=SECOND_KEY_HANDLE)
    call = lambda: verify_tpm_attestation(  # noqa: E731
        att_obj, key_authorization=keyauth, csr_public_key=csr.public_key(),
        attestation_roots=[attestation_ca.cert], now=datetime.now(UTC),
    )  # fmt: skip
    assert reason_of(call) is Reason.KEY_ATTRIBUTES


def test_ak_certificate_from_untrusted_ca_is_rejected(attested, ca_factory):
    other_ca = ca_factory("not trusted")
    assert reason_of(lambda: verify(attested, [other_ca.cert])) is Reason.UNTRUSTED_AK


def test_ak_certificate_without_aik_eku_is_rejected(attested, attestation_ca):
    now = datetime.now(UTC)
    bad = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(attestation_ca.cert.subject)
        .public_key(attested.ak_cert.public_key())
        .serial_number(99)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(attested.ak_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, True)
        .sign(attestation_ca.key, hashes.SHA384())
    )
    att_obj = mutate(attested.att_obj, x5c=[bad.public_bytes(Encoding.DER)])
    assert reason_of(lambda: verify(replace(attested, att_obj=att_obj), [attestation_ca.cert])) is Reason.AK_PROFILE


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ver": "1.2"}, Reason.UNSUPPORTED_FORMAT),
        ({"alg": -257}, Reason.UNSUPPORTED_ALGORITHM),
        ({"alg": -8}, Reason.UNSUPPORTED_ALGORITHM),
        ({"x5c": []}, Reason.MALFORMED),
        ({"sig": b""}, Reason.MALFORMED),
    ],
)
def test_statement_shape_errors(attested, attestation_ca, change, reason):
    att_obj = mutate(attested.att_obj, **change)
    assert reason_of(lambda: verify(replace(attested, att_obj=att_obj), [attestation_ca.cert])) is reason


def test_other_format_is_rejected(attested, attestation_ca):
    top = cbor2.loads(attested.att_obj)
    top["fmt"] = "packed"
    att_obj = cbor2.dumps(top)
    assert reason_of(lambda: verify(replace(attested, att_obj=att_obj), [attestation_ca.cert])) is (
        Reason.UNSUPPORTED_FORMAT
    )


def _tpmt_ecdsa(der: bytes, hash_alg: TPM2_ALG) -> bytes:
    r, s = decode_dss_signature(der)
    signature = TPMT_SIGNATURE(
        sigAlg=TPM2_ALG.ECDSA,
        signature=TPMU_SIGNATURE(
            ecdsa=TPMS_SIGNATURE_ECC(hash=hash_alg, signatureR=r.to_bytes(32, "big"), signatureS=s.to_bytes(32, "big"))
        ),
    )
    return bytes(signature.marshal())


def test_sig_as_marshalled_tpmt_signature_is_accepted(attested, attestation_ca):
    """WebAuthn L2 §8.3 names sig a TPMT_SIGNATURE; that form verifies like the bare DER form."""
    statement = cbor2.loads(attested.att_obj)["attStmt"]
    wrapped = mutate(attested.att_obj, sig=_tpmt_ecdsa(statement["sig"], TPM2_ALG.SHA256))
    verify(replace(attested, att_obj=wrapped), [attestation_ca.cert])
    wrong_hash = mutate(attested.att_obj, sig=_tpmt_ecdsa(statement["sig"], TPM2_ALG.SHA384))
    assert reason_of(lambda: verify(replace(attested, att_obj=wrong_hash), [attestation_ca.cert])) is (
        Reason.BAD_SIGNATURE
    )
