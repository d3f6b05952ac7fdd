"""Identifier codecs (RFC 4043 PermanentIdentifier, RFC 4108 HardwareModuleName, draft-09 §3.1/§4.1 ABNF)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from ca.device_identity import (
    EK_SPKI_SHA256_ASSIGNER,
    ID_ON_PERMANENT_IDENTIFIER,
    HardwareModuleName,
    PermanentIdentifier,
)
from enrollment.attestation.errors import AttestationError, Reason
from enrollment.attestation.repository import InMemoryChallengeRepository
from enrollment.attestation.tpm_statement import decode_att_obj, expected_extra_data

_value = st.text(st.characters(blacklist_characters="/", blacklist_categories=["Cs"]), min_size=1, max_size=64)
_oid = st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=6).map(
    lambda arcs: "2." + ".".join(str(a) for a in arcs)
)


@given(_value, st.none() | _oid)
def test_permanent_identifier_round_trips(value, assigner):
    identifier = PermanentIdentifier(value, assigner)
    assert PermanentIdentifier.from_other_name(identifier.to_other_name()) == identifier
    assert PermanentIdentifier.parse_acme(identifier.acme_value()) == identifier


@given(_value.map(lambda v: v.encode()), _oid)
def test_hardware_module_name_round_trips(serial, hw_type):
    name = HardwareModuleName(hw_type, serial)
    assert HardwareModuleName.from_other_name(name.to_other_name()) == name


def test_ek_derivation_is_stable_hex_sha256():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    identifier = PermanentIdentifier.from_ek(key)
    assert identifier == PermanentIdentifier.from_ek(key)
    assert len(identifier.value) == 64 and int(identifier.value, 16) >= 0
    assert identifier.assigner == EK_SPKI_SHA256_ASSIGNER
    assert HardwareModuleName.from_ek(key).acme_value() == f"{identifier.value}/2.23.133.1.2"


@pytest.mark.parametrize("bad", ["", "a/b/c", "abc/1.2.x", "abc/3.1"])
def test_invalid_acme_values_are_rejected(bad):
    with pytest.raises(ValueError):
        PermanentIdentifier.parse_acme(bad)


def test_other_name_with_foreign_oid_is_rejected():
    with pytest.raises(ValueError):
        PermanentIdentifier.from_other_name(x509.OtherName(x509.ObjectIdentifier("1.2.3"), b"\x30\x00"))
    with pytest.raises(ValueError):  # identifierValue absent: draft-09 §3.2 requires it
        PermanentIdentifier.from_other_name(x509.OtherName(ID_ON_PERMANENT_IDENTIFIER, b"\x30\x00"))


def test_extra_data_is_hash_of_key_authorization():
    assert expected_extra_data("tok.thumb", -7) == hashlib.sha256(b"tok.thumb").digest()
    assert expected_extra_data("tok.thumb", -35) == hashlib.sha384(b"tok.thumb").digest()
    with pytest.raises(AttestationError) as err:
        expected_extra_data("tok.thumb", 0)
    assert err.value.reason is Reason.UNSUPPORTED_ALGORITHM


def test_decode_att_obj_is_bounded():
    assert decode_att_obj("oWFiYw") == b"\xa1abc"
    with pytest.raises(AttestationError):
        decode_att_obj("A" * 100_000)


def test_in_memory_repository_consumes_once():
    @dataclass(frozen=True)
    class Item:
        id: str
        expires_at: datetime

    repo = InMemoryChallengeRepository[Item]()
    now = datetime.now(UTC)
    repo.add(Item("a", now))
    with pytest.raises(KeyError):
        repo.add(Item("a", now))
    assert repo.consume("a", now) and not repo.consume("a", now) and not repo.consume("b", now)
    assert repo.get("a") == Item("a", now)
