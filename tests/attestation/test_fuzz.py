"""Hypothesis fuzzing of the attestation parsers: any input yields AttestationError or success, never
another exception (random bytes, random CBOR shapes, truncations and bit flips of a genuine attObj)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrollment.attestation.clock import SystemClock
from enrollment.attestation.credential import CredentialActivation, CredentialChallenge
from enrollment.attestation.device import TpmDevice
from enrollment.attestation.errors import AttestationError
from enrollment.attestation.repository import InMemoryChallengeRepository
from enrollment.attestation.tpm_statement import decode_att_obj, parse_att_obj, verify_tpm_attestation
from enrollment.attestation.tpm_structures import parse_attest, parse_public_area

KEY_AUTHORIZATION = "fuzz-token.fuzz-thumbprint"
# a bit flip may make the AK certificate serial non-positive: cryptography warns, chain.py rejects it
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
FUZZ = settings(
    max_examples=int(os.environ.get("IKEPKI_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Genuine:
    att_obj: bytes
    csr_key: object
    roots: tuple[x509.Certificate, ...]


@pytest.fixture(scope="session")
def genuine(swtpm_device, ek_trust, attestation_ca) -> Genuine:
    clock = SystemClock()
    activation = CredentialActivation(ek_trust, InMemoryChallengeRepository[CredentialChallenge](), clock)
    with TpmDevice(swtpm_device.tcti) as device:
        blob = activation.start(device.ek_certificate(), device.ak_public())
        activated = activation.finish(
            blob.challenge_id, device.activate_credential(blob.id_object, blob.encrypted_secret)
        )
        ak_cert = attestation_ca.sign_ak(activated)
        device.create_device_key()
        csr = device.build_csr()
        att_obj = device.att_obj(KEY_AUTHORIZATION, [ak_cert.public_bytes(Encoding.DER)])
    return Genuine(att_obj, csr.public_key(), (attestation_ca.cert,))


def _verify(genuine: Genuine, att_obj: bytes) -> None:
    with contextlib.suppress(AttestationError):
        verify_tpm_attestation(
            att_obj,
            key_authorization=KEY_AUTHORIZATION,
            csr_public_key=genuine.csr_key,  # type: ignore[arg-type]
            attestation_roots=genuine.roots,
            now=datetime.now(UTC),
        )


def test_genuine_verifies(genuine):
    verify_tpm_attestation(
        genuine.att_obj,
        key_authorization=KEY_AUTHORIZATION,
        csr_public_key=genuine.csr_key,  # type: ignore[arg-type]
        attestation_roots=genuine.roots,
        now=datetime.now(UTC),
    )


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(genuine, data):
    _verify(genuine, data)
    for parse in (parse_att_obj, parse_attest, parse_public_area):
        with contextlib.suppress(AttestationError):
            parse(data)


@FUZZ
@given(st.text(max_size=300))
def test_random_base64(text):
    with contextlib.suppress(AttestationError):
        decode_att_obj(text)


_cbor_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=64), st.text(max_size=16)
)
_cbor = st.recursive(
    _cbor_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=20,
)
_statement_keys = st.sampled_from(["ver", "alg", "x5c", "sig", "certInfo", "pubArea", "other"])


@FUZZ
@given(st.dictionaries(_statement_keys, _cbor, max_size=7), _cbor)
def test_random_cbor_statements(genuine, statement, auth_data):
    _verify(genuine, cbor2.dumps({"fmt": "tpm", "attStmt": statement, "authData": auth_data}))


@FUZZ
@given(st.data())
def test_truncated_and_flipped_att_obj(genuine, data):
    blob = bytearray(genuine.att_obj)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob)))
    flips = data.draw(st.lists(st.integers(min_value=0, max_value=len(blob) - 1), max_size=4))
    for index in flips:
        blob[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    _verify(genuine, bytes(blob[:cut] if data.draw(st.booleans()) else blob))


@FUZZ
@given(st.sampled_from(["certInfo", "pubArea", "sig"]), st.data())
def test_mutated_tpm_structures(genuine, field, data):
    top = cbor2.loads(genuine.att_obj)
    value = bytearray(top["attStmt"][field])
    index = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    value[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    cut = data.draw(st.integers(min_value=1, max_value=len(value)))
    top["attStmt"][field] = bytes(value[:cut])
    _verify(genuine, cbor2.dumps(top))
    for parse in (parse_attest, parse_public_area):
        with contextlib.suppress(AttestationError):
            parse(bytes(value[:cut]))


def test_mistyped_name_attribute_in_a_certificate_is_a_chain_error() -> None:
    """Regression (found by the fuzzer above): a SAN dirName attribute re-tagged as BIT STRING makes
    cryptography raise TypeError while decoding extensions; the loader turns it into ChainError."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from enrollment.attestation.chain import ChainError, load_der_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    tpm = x509.Name([x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:20191023")])
    der = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(tpm).public_key(key.public_key())
           .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(tpm)]), critical=True)
           .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))
    san_value = b"\x0c\x0bid:20191023"
    assert der.count(san_value) == 2  # issuer name and SAN
    at = der.rindex(san_value)
    with pytest.raises(ChainError):
        load_der_certificate(der[:at] + b"\x03" + der[at + 1:])


def test_certificate_with_a_duplicated_extension_is_a_chain_error() -> None:
    """cert-duplicate-ski.der: hypothesis found that cryptography raises DuplicateExtension (not a
    ValueError) for a certificate carrying one extension twice; it must be a ChainError."""
    import datetime as dt

    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from enrollment.attestation.chain import ChainError, load_der_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "dup")])
    now = datetime.now(UTC)
    der = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(7).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
           .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))
    cert = asn1_x509.Certificate.load(der)
    extensions = cert["tbs_certificate"]["extensions"]
    extensions.append(asn1_x509.Extension.load(extensions[0].dump()))
    tampered = asn1_x509.Certificate({"tbs_certificate": cert["tbs_certificate"],
                                      "signature_algorithm": cert["signature_algorithm"],
                                      "signature_value": cert["signature_value"]}).dump(force=True)
    with pytest.raises(ChainError):
        load_der_certificate(tampered)
