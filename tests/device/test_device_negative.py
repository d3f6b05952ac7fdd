"""Refusals of TPM-bound enrollment, each with its ACME problem (RFC 8555 §6.7, draft-ietf-acme-device-attest-09
§9.3 ``badAttestationStatement``) and nothing issued.  Real swtpm, real ``ikepki serve``, the device agent's
building blocks (acme library ClientV2 + the device-attest-01 challenge classes) driven step by step."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from device_helpers import DevicePki, certify_software_key, device_flow, ek_fingerprint_of, software_csr
from tpm2_pytss.constants import TPMA_OBJECT
from tpm2_pytss.types import TPMT_PUBLIC

from enrollment.attestation.cli import AgentError, AttestClient, device_identifiers
from enrollment.attestation.device import TpmDevice


def _refused(exc: pytest.ExceptionInfo[AgentError], problem: str, reason: str = "") -> None:
    assert exc.value.problem == problem, f"{exc.value.problem}: {exc.value.detail}"
    assert exc.value.detail.startswith(reason), exc.value.detail


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _issued(pki: DevicePki, tpm: Any, profile: str = "machine") -> set[int]:
    return {i.serial for i in pki.issued(ek_fingerprint_of(tpm), profile)}


def test_software_key_certified_by_a_genuine_ak_is_refused(pki: DevicePki, device_tpm: Any) -> None:
    before = _issued(pki, device_tpm)
    software = ec.generate_private_key(ec.SECP256R1())
    with device_flow(pki, device_tpm) as flow:
        ids = flow.identifiers()
        order = flow.order(ids, software_csr(list(ids), software))
        # the genuine AK certifies a key loaded from outside (TPM2_LoadExternal): not fixedTPM
        flow.answer(order, lambda ka: certify_software_key(flow.tpm, software, ka, flow.chain))
        with pytest.raises(AgentError) as exc:
            flow.session.wait_authorizations(order)
    _refused(exc, "badAttestationStatement", "key-attributes")
    assert _issued(pki, device_tpm) == before


def test_csr_with_a_software_key_after_genuine_attestation_is_refused(pki: DevicePki, device_tpm: Any) -> None:
    before = _issued(pki, device_tpm)
    software = ec.generate_private_key(ec.SECP256R1())
    with device_flow(pki, device_tpm) as flow:
        ids = flow.identifiers()
        order = flow.order(ids, software_csr(list(ids), software))
        flow.answer(order)  # attests the TPM key ...
        flow.session.wait_authorizations(order)
        with pytest.raises(AgentError) as exc:  # ... but the CSR carries the software key
            flow.session.finalize(order)
    _refused(exc, "badCSR", "key-mismatch")
    assert _issued(pki, device_tpm) == before


def test_ek_certificate_from_an_untrusted_manufacturer(pki: DevicePki, foreign_tpm: Any) -> None:
    with pytest.raises(AgentError) as exc, device_flow(pki, foreign_tpm):
        pass
    _refused(exc, "badAttestationStatement", "untrusted-ek")
    assert _issued(pki, foreign_tpm, "attestation-ak") == set()


@pytest.mark.parametrize("attribute", [TPMA_OBJECT.FIXEDTPM, TPMA_OBJECT.RESTRICTED])
def test_ak_without_fixed_tpm_or_restricted_is_refused_at_start(pki: DevicePki, device_tpm: Any,
                                                                attribute: TPMA_OBJECT) -> None:
    with device_flow(pki, device_tpm, enroll=False) as flow:
        area, _ = TPMT_PUBLIC.unmarshal(flow.tpm.ak_public())
        area.objectAttributes = TPMA_OBJECT(int(area.objectAttributes) & ~int(attribute))
        with pytest.raises(AgentError) as exc:
            flow.attest_client.start(flow.tpm.ek_certificate(), bytes(area.marshal()), flow.eab)
    _refused(exc, "badAttestationStatement", "ak-attributes")


def test_wrong_activation_secret_then_the_challenge_is_spent(pki: DevicePki, device_tpm: Any) -> None:
    before = _issued(pki, device_tpm, "attestation-ak")
    with device_flow(pki, device_tpm, enroll=False) as flow:
        client: AttestClient = flow.attest_client
        blob = client.start(flow.tpm.ek_certificate(), flow.tpm.ak_public(), flow.eab)
        with pytest.raises(AgentError) as wrong:
            client.finish(blob["challengeId"], os.urandom(32))
        _refused(wrong, "badAttestationStatement", "wrong-secret")
        secret = flow.tpm.activate_credential(_b64d(blob["idObject"]), _b64d(blob["encryptedSecret"]))
        with pytest.raises(AgentError) as spent:  # single use: even the right secret is too late now
            client.finish(blob["challengeId"], secret)
        _refused(spent, "badAttestationStatement", "replay")
        with pytest.raises(AgentError) as unknown:
            client.finish("no-such-challenge", secret)
        _refused(unknown, "badAttestationStatement", "unknown-challenge")
    assert _issued(pki, device_tpm, "attestation-ak") == before


def test_replayed_attestation_object_is_refused(pki: DevicePki, device_tpm: Any) -> None:
    with device_flow(pki, device_tpm) as flow:
        first = flow.order()
        captured: list[bytes] = []

        def capture(ka: str) -> bytes:
            captured.append(flow.tpm.att_obj(ka, flow.chain))
            return captured[-1]

        flow.answer(first, capture)
        flow.session.wait_authorizations(first)
        flow.session.finalize(first)
        before = _issued(pki, device_tpm)
        second = flow.order()
        replay = iter(captured)
        flow.answer(second, lambda ka: next(replay))
        with pytest.raises(AgentError) as exc:
            flow.session.wait_authorizations(second)
    _refused(exc, "badAttestationStatement", "extradata-mismatch")
    assert _issued(pki, device_tpm) == before


def test_extra_data_for_another_challenge_is_refused(pki: DevicePki, device_tpm: Any) -> None:
    before = _issued(pki, device_tpm)
    with device_flow(pki, device_tpm) as flow:
        target, other = flow.order(), flow.order()
        other_key_auths = iter(flow.key_authorizations(other))
        flow.answer(target, lambda ka: flow.tpm.att_obj(next(other_key_auths), flow.chain))
        with pytest.raises(AgentError) as exc:
            flow.session.wait_authorizations(target)
    _refused(exc, "badAttestationStatement", "extradata-mismatch")
    assert _issued(pki, device_tpm) == before


def test_another_devices_identifier_is_refused(pki: DevicePki, device_tpm: Any, foreign_tpm: Any) -> None:
    with TpmDevice(foreign_tpm.tcti) as other:
        their_ids = device_identifiers(other.ek_certificate())
    before = _issued(pki, device_tpm)
    with device_flow(pki, device_tpm) as flow:
        order = flow.order(their_ids)
        flow.answer(order)
        with pytest.raises(AgentError) as exc:
            flow.session.wait_authorizations(order)
    _refused(exc, "badAttestationStatement", "identifier-mismatch")
    assert _issued(pki, device_tpm) == before
    assert _issued(pki, foreign_tpm) == set()


def test_eab_key_without_the_device_pattern(pki: DevicePki, device_tpm: Any) -> None:
    eab = pki.eab("*.test")
    with pytest.raises(AgentError) as start, device_flow(pki, device_tpm, eab=eab):
        pass
    _refused(start, "unauthorized")
    with device_flow(pki, device_tpm, enroll=False, eab=eab) as flow, pytest.raises(AgentError) as order:
        flow.order()
    _refused(order, "rejectedIdentifier")
