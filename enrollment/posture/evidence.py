"""Posture evidence on the wire and the binding of self-reported facts into the quote.

The device sends, for one server nonce::

    {"akCertificate": b64url(DER), "nonce": b64url, "quote": b64url(TPMS_ATTEST),
     "signature": b64url(marshalled TPMT_SIGNATURE), "pcrs": {"sha256": {"0": hex, …, "7": hex}},
     "facts": {"os_name": "Debian", "os_version": "12.8", "disk_encryption": true, "edr_running": true},
     "eventLog": b64url(TCG PC Client crypto-agile log)}          # eventLog optional

``quote`` and ``signature`` are exactly what TPM2_Quote returns (TPM 2.0 Part 3 §18.4) and what
``tpm2_quote -m … -s …`` writes (tss format).  The quote's qualifying data (``extraData``) is
``SHA-256(nonce ‖ SHA-256(canonical JSON of facts))``: the TPM signs the facts the device claims
*together with* the server's challenge, so facts cannot be swapped after the quote and a quote cannot
be replayed under another nonce.  The facts themselves remain self-reported (see the README).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from enrollment.posture.errors import EvidenceError, EvidenceReason

MAX_FACTS = 32
MAX_FACT_KEY = 64
MAX_FACT_TEXT = 256
MAX_FACTS_JSON = 4096
MAX_EVENT_LOG = 1024 * 1024
MAX_QUOTE = 1024
MAX_SIGNATURE = 1024
NONCE_SIZE = 32
BANKS = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
MAX_PCR = 23


def b64d(value: Any, what: str, bound: int) -> bytes:
    """Bounded base64url (padding optional) → bytes; EvidenceError(malformed) otherwise."""
    if not isinstance(value, str) or not 0 < len(value) <= bound * 4 // 3 + 4:
        raise EvidenceError(EvidenceReason.MALFORMED, f"{what} must be base64url of at most {bound} bytes")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise EvidenceError(EvidenceReason.MALFORMED, f"{what} is not base64url") from None


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def canonical_facts(facts: Any) -> bytes:
    """Canonical JSON (sorted keys, no blanks, UTF-8) of a flat, bounded facts object."""
    if not isinstance(facts, dict) or len(facts) > MAX_FACTS:
        raise EvidenceError(EvidenceReason.MALFORMED, f"facts must be an object of at most {MAX_FACTS} entries")
    for key, value in facts.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_FACT_KEY:
            raise EvidenceError(EvidenceReason.MALFORMED, "fact names must be short strings")
        if isinstance(value, str):
            if len(value) > MAX_FACT_TEXT:
                raise EvidenceError(EvidenceReason.MALFORMED, f"fact {key} is longer than {MAX_FACT_TEXT}")
        elif not (value is None or isinstance(value, bool | int)) or (
                isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53):
            raise EvidenceError(EvidenceReason.MALFORMED, f"fact {key} must be a string, boolean, integer or null")
    data = json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_FACTS_JSON:
        raise EvidenceError(EvidenceReason.MALFORMED, f"facts larger than {MAX_FACTS_JSON} bytes")
    return data


def qualifying_data(nonce: bytes, facts: dict[str, Any]) -> bytes:
    """``SHA-256(nonce ‖ SHA-256(canonical facts))`` (module docstring)."""
    return hashlib.sha256(nonce + hashlib.sha256(canonical_facts(facts)).digest()).digest()


def parse_pcrs(value: Any) -> dict[str, dict[int, bytes]]:
    """``{"sha256": {"7": "hex", …}}`` → ``{"sha256": {7: bytes}}``, bank and digest sizes checked."""
    if not isinstance(value, dict) or not 0 < len(value) <= len(BANKS):
        raise EvidenceError(EvidenceReason.MALFORMED, "pcrs must map a bank name to PCR values")
    out: dict[str, dict[int, bytes]] = {}
    for bank, values in value.items():
        size = BANKS.get(bank) if isinstance(bank, str) else None
        if size is None or not isinstance(values, dict) or not 0 < len(values) <= MAX_PCR + 1:
            raise EvidenceError(EvidenceReason.MALFORMED, f"unknown PCR bank {str(bank)[:16]!r} or no values")
        parsed: dict[int, bytes] = {}
        for index, digest in values.items():
            if not isinstance(index, str) or not index.isdigit() or len(index) > 2 or int(index) > MAX_PCR:
                raise EvidenceError(EvidenceReason.MALFORMED, "PCR index must be 0..23")
            if not isinstance(digest, str) or len(digest) != 2 * size:
                raise EvidenceError(EvidenceReason.MALFORMED, f"{bank} PCR {index} must be {size} bytes of hex")
            try:
                parsed[int(index)] = bytes.fromhex(digest)
            except ValueError:
                raise EvidenceError(EvidenceReason.MALFORMED, f"{bank} PCR {index} is not hex") from None
        out[bank] = parsed
    return out


@dataclass(frozen=True)
class Evidence:
    """One posture submission, parsed and bounded (not yet verified)."""

    ak_certificate: bytes
    nonce: bytes
    quote: bytes
    signature: bytes
    pcrs: dict[str, dict[int, bytes]]
    facts: dict[str, Any]
    event_log: bytes | None

    @classmethod
    def parse(cls, body: Any) -> Evidence:
        if not isinstance(body, dict):
            raise EvidenceError(EvidenceReason.MALFORMED, "evidence must be a JSON object")
        facts = body.get("facts", {})
        canonical_facts(facts)
        log = body.get("eventLog")
        return cls(
            ak_certificate=b64d(body.get("akCertificate"), "akCertificate", 8192),
            nonce=b64d(body.get("nonce"), "nonce", 64),
            quote=b64d(body.get("quote"), "quote", MAX_QUOTE),
            signature=b64d(body.get("signature"), "signature", MAX_SIGNATURE),
            pcrs=parse_pcrs(body.get("pcrs")),
            facts=dict(facts),
            event_log=None if log is None else b64d(log, "eventLog", MAX_EVENT_LOG))

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "akCertificate": b64e(self.ak_certificate), "nonce": b64e(self.nonce), "quote": b64e(self.quote),
            "signature": b64e(self.signature),
            "pcrs": {bank: {str(i): v.hex() for i, v in sorted(values.items())} for bank, values in self.pcrs.items()},
            "facts": self.facts}
        if self.event_log is not None:
            body["eventLog"] = b64e(self.event_log)
        return body
