"""TPM2_Quote verification against real swtpm quotes, with tpm2-tools as an independent producer
(tpm2_quote, accepted by :func:`verify_quote`) and checker (tpm2_checkquote accepts the agent's quote)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from posture_helpers import SELECTION, ak_pem, boot, extend, measure, tools

from enrollment.attestation.device import TpmDevice
from enrollment.posture.errors import EvidenceError, EvidenceReason
from enrollment.posture.eventlog import parse_event_log, replay, secure_boot_state
from enrollment.posture.evidence import qualifying_data
from enrollment.posture.policy import parse_selection
from enrollment.posture.quote import verify_quote

REQUIRED = parse_selection(SELECTION)
FACTS = {"os_name": "Debian", "os_version": "12.8", "disk_encryption": True, "edr_running": True}


def _quote(tpm: TpmDevice, nonce: bytes, facts: dict[str, Any] = FACTS) -> tuple[bytes, bytes, dict[str, Any]]:
    return tpm.quote(SELECTION, qualifying_data(nonce, facts))


def test_agent_quote_verifies_and_binds_nonce_facts_and_pcrs(swtpm: Any) -> None:
    with TpmDevice(swtpm.tcti) as tpm:
        measured = boot()
        measure(tpm, measured)
        key = load_pem_public_key(ak_pem(tpm))
        nonce = os.urandom(32)
        quote, sig, pcrs = _quote(tpm, nonce)
        assert pcrs["sha256"][7] == measured.pcr(7)  # the TPM holds what the test measured
        quoted = verify_quote(quote, sig, key, qualifying_data(nonce, FACTS), pcrs, REQUIRED)
        assert quoted.pcrs["sha256"][0] == measured.pcr(0)

        def refused(reason: EvidenceReason, **changes: Any) -> None:
            args = {"quote": quote, "signature": sig, "ak_key": key, "expected_qualifying_data":
                    qualifying_data(nonce, FACTS), "pcrs": pcrs, "required": REQUIRED, **changes}
            with pytest.raises(EvidenceError) as info:
                verify_quote(**args)
            assert info.value.reason is reason

        refused(EvidenceReason.WRONG_QUALIFYING_DATA, expected_qualifying_data=qualifying_data(os.urandom(32), FACTS))
        refused(EvidenceReason.WRONG_QUALIFYING_DATA,  # facts changed after the quote
                expected_qualifying_data=qualifying_data(nonce, {**FACTS, "edr_running": False}))
        lied = {"sha256": {**pcrs["sha256"], 7: boot(secure_boot=False).pcr(7)}}
        refused(EvidenceReason.PCR_DIGEST, pcrs=lied)
        refused(EvidenceReason.PCR_SELECTION, pcrs={"sha256": {i: v for i, v in pcrs["sha256"].items() if i != 3}})
        refused(EvidenceReason.PCR_SELECTION, required=parse_selection("sha256:0,1,2,3,4,5,6,7,8"))
        flipped = bytearray(quote)
        flipped[-5] ^= 1
        refused(EvidenceReason.BAD_SIGNATURE, quote=bytes(flipped))


def test_quote_from_another_ak_is_refused(swtpm: Any) -> None:
    from device_helpers import running_swtpm

    nonce = os.urandom(32)
    with running_swtpm() as other, TpmDevice(other.tcti) as foreign:
        foreign.ak_public()
        quote, sig, pcrs = _quote(foreign, nonce)
    with TpmDevice(swtpm.tcti) as tpm:
        key = load_pem_public_key(ak_pem(tpm))
    with pytest.raises(EvidenceError) as info:
        verify_quote(quote, sig, key, qualifying_data(nonce, FACTS), pcrs, REQUIRED)
    assert info.value.reason is EvidenceReason.BAD_SIGNATURE


def test_event_log_replays_to_the_quoted_pcrs(swtpm: Any) -> None:
    measured = boot()
    events = parse_event_log(measured.log)
    assert replay(events, "sha256") == {i: measured.pcr(i) for i in range(8)}
    assert secure_boot_state(events) is True
    assert secure_boot_state(parse_event_log(boot(secure_boot=False).log)) is False
    with TpmDevice(swtpm.tcti) as tpm:
        measure(tpm, measured)
        tpm.ak_public()
        _, _, pcrs = _quote(tpm, os.urandom(32))
    assert replay(events, "sha256") == pcrs["sha256"]


def test_tpm2_checkquote_accepts_the_agent_quote(swtpm: Any, tmp_path: Path) -> None:
    """tpm2_checkquote (tpm2-tools 5.4) as an independent checker: same quote, PCRs, nonce → exit 0;
    another qualifying data → exit 1."""
    with TpmDevice(swtpm.tcti) as tpm:
        measure(tpm, boot())
        (tmp_path / "ak.pem").write_bytes(ak_pem(tpm))
        nonce = os.urandom(32)
        qualifying = qualifying_data(nonce, FACTS)
        quote, sig, _ = tpm.quote(SELECTION, qualifying)
    (tmp_path / "quote.msg").write_bytes(quote)
    (tmp_path / "quote.sig").write_bytes(sig)
    ok = tools(swtpm.tcti, tmp_path, "tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
               "-g", "sha256", "-q", qualifying.hex(), check=False)
    assert ok.returncode == 0, ok.stderr
    bad = tools(swtpm.tcti, tmp_path, "tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
                "-g", "sha256", "-q", hashlib.sha256(b"other").hexdigest(), check=False)
    assert bad.returncode != 0


def test_verify_quote_accepts_a_tpm2_quote_made_quote(swtpm: Any, tmp_path: Path) -> None:
    """tpm2_quote (tpm2-tools 5.4) as an independent producer, with the persistent AK."""
    with TpmDevice(swtpm.tcti) as tpm:
        measure(tpm, boot())
        key = load_pem_public_key(ak_pem(tpm))
        extend(tpm, 7, b"late change")  # the quote reflects the TPM at quote time
        nonce = os.urandom(32)
        qualifying = qualifying_data(nonce, FACTS)
        tools(swtpm.tcti, tmp_path, "tpm2_quote", "-c", "0x81000002", "-l", SELECTION, "-q", qualifying.hex(),
              "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs", "-g", "sha256")
        pcrs = tpm.pcr_values(SELECTION)
    quoted = verify_quote((tmp_path / "quote.msg").read_bytes(), (tmp_path / "quote.sig").read_bytes(), key,
                          qualifying, pcrs, REQUIRED)
    assert quoted.pcrs["sha256"][7] == pcrs["sha256"][7] != boot().pcr(7)
