"""Verification of a TPM2_Quote against the attestation key ikepki certified for the device.

TPM 2.0 Library Part 3 §18.4 TPM2_Quote: the AK signs a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE
(Part 2 §10.12.12, §10.12.1 TPMS_QUOTE_INFO) whose ``pcrDigest`` is the digest, with the signing
scheme's hash, of the selected PCR values concatenated in selection order (banks in list order, PCR
indices ascending).  Parsing is tpm2-pytss (bounded, no trailing bytes), signature verification is
cryptography.  Checks, in order: structure, magic, type, signature, qualifying data (constant time),
PCR selection = the values sent, PCR digest.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss.constants import TPM2_ALG, TPM2_GENERATED, TPM2_ST
from tpm2_pytss.types import TPMS_ATTEST, TPMT_SIGNATURE

from enrollment.posture.errors import EvidenceError, EvidenceReason

MAX_QUOTE = 1024
MAX_SIGNATURE = 1024
BANK_BY_ALG = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384",
               TPM2_ALG.SHA512: "sha512"}
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256,
                                                 "sha384": hashes.SHA384, "sha512": hashes.SHA512}


@dataclass(frozen=True)
class QuotedPcrs:
    """What the TPM vouched for: PCR values (bank → index → digest) and the TPM clock."""

    pcrs: dict[str, dict[int, bytes]]
    clock_ms: int
    reset_count: int
    firmware_version: int


def _unmarshal(cls: Any, data: bytes, bound: int, what: str) -> object:
    if not 0 < len(data) <= bound:
        raise EvidenceError(EvidenceReason.MALFORMED, f"{what} missing or larger than {bound} bytes")
    try:
        value, used = cls.unmarshal(data)
    except Exception as exc:  # tpm2-pytss raises TSS2_Exception and others on short/garbled input
        raise EvidenceError(EvidenceReason.MALFORMED, f"{what} does not unmarshal: {type(exc).__name__}") from None
    if used != len(data):
        raise EvidenceError(EvidenceReason.MALFORMED, f"{what} has {len(data) - used} trailing bytes")
    return value


def parse_quote(data: bytes) -> TPMS_ATTEST:
    """A complete TPMS_ATTEST of type quote, magic checked."""
    attest = _unmarshal(TPMS_ATTEST, data, MAX_QUOTE, "quote")
    assert isinstance(attest, TPMS_ATTEST)
    if attest.magic != TPM2_GENERATED.VALUE:
        raise EvidenceError(EvidenceReason.NOT_A_QUOTE, "magic is not TPM_GENERATED_VALUE")
    if attest.type != TPM2_ST.ATTEST_QUOTE:
        raise EvidenceError(EvidenceReason.NOT_A_QUOTE, f"attestation type {int(attest.type):#x} is not a quote")
    return attest


def parse_signature(data: bytes) -> TPMT_SIGNATURE:
    sig = _unmarshal(TPMT_SIGNATURE, data, MAX_SIGNATURE, "signature")
    assert isinstance(sig, TPMT_SIGNATURE)
    return sig


def selection_of(attest: TPMS_ATTEST) -> list[tuple[str, list[int]]]:
    """The quote's PCR selection as (bank, ascending indices), in list order."""
    out: list[tuple[str, list[int]]] = []
    sel = attest.attested.quote.pcrSelect
    for i in range(sel.count):
        item = sel.pcrSelections[i]
        bank = BANK_BY_ALG.get(item.hash)
        if bank is None:
            raise EvidenceError(EvidenceReason.PCR_SELECTION, f"PCR bank {int(item.hash):#x} not supported")
        bits = bytes(item.pcrSelect)[: item.sizeofSelect]
        out.append((bank, [b * 8 + k for b, byte in enumerate(bits) for k in range(8) if byte >> k & 1]))
    return out


def _verify_signature(key: PublicKeyTypes, sig: TPMT_SIGNATURE, message: bytes) -> str:
    """Verify ``sig`` over ``message``; returns the scheme's hash name (also used for pcrDigest)."""
    if sig.sigAlg == TPM2_ALG.ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
        detail = sig.signature.ecdsa
        bank = BANK_BY_ALG.get(detail.hash)
        if bank is None:
            raise EvidenceError(EvidenceReason.BAD_SIGNATURE, "unsupported signature hash")
        der = encode_dss_signature(int.from_bytes(bytes(detail.signatureR), "big"),
                                   int.from_bytes(bytes(detail.signatureS), "big"))
        try:
            key.verify(der, message, ec.ECDSA(HASHES[bank]()))
        except InvalidSignature:
            raise EvidenceError(EvidenceReason.BAD_SIGNATURE, "quote signature does not verify with the AK") from None
        return bank
    if sig.sigAlg in (TPM2_ALG.RSASSA, TPM2_ALG.RSAPSS) and isinstance(key, rsa.RSAPublicKey):
        detail = sig.signature.rsassa if sig.sigAlg == TPM2_ALG.RSASSA else sig.signature.rsapss
        bank = BANK_BY_ALG.get(detail.hash)
        if bank is None:
            raise EvidenceError(EvidenceReason.BAD_SIGNATURE, "unsupported signature hash")
        pad: padding.AsymmetricPadding = padding.PKCS1v15() if sig.sigAlg == TPM2_ALG.RSASSA else padding.PSS(
            padding.MGF1(HASHES[bank]()), padding.PSS.AUTO)
        try:
            key.verify(bytes(detail.sig), message, pad, HASHES[bank]())
        except InvalidSignature:
            raise EvidenceError(EvidenceReason.BAD_SIGNATURE, "quote signature does not verify with the AK") from None
        return bank
    raise EvidenceError(EvidenceReason.BAD_SIGNATURE, "signature scheme does not fit the AK")


def verify_quote(quote: bytes, signature: bytes, ak_key: PublicKeyTypes, expected_qualifying_data: bytes,
                 pcrs: dict[str, dict[int, bytes]], required: Sequence[tuple[str, Sequence[int]]]) -> QuotedPcrs:
    """Check the quote (module docstring) and that it covers every ``required`` (bank, PCRs)."""
    attest = parse_quote(quote)
    hash_name = _verify_signature(ak_key, parse_signature(signature), quote)
    if not hmac.compare_digest(bytes(attest.extraData), expected_qualifying_data):
        raise EvidenceError(EvidenceReason.WRONG_QUALIFYING_DATA,
                            "the quote's qualifying data is not H(nonce || H(facts)) for this nonce and facts")
    selection = selection_of(attest)
    sent = {bank: sorted(values) for bank, values in pcrs.items()}
    quoted: dict[str, list[int]] = {}
    for bank, indices in selection:
        quoted.setdefault(bank, []).extend(indices)
    if {b: sorted(set(i)) for b, i in quoted.items()} != sent:
        raise EvidenceError(EvidenceReason.PCR_SELECTION, "the PCR values sent differ from the quote's selection")
    for bank, needed in required:
        missing = set(needed) - set(quoted.get(bank, []))
        if missing:
            raise EvidenceError(EvidenceReason.PCR_SELECTION, f"the quote lacks {bank} PCRs {sorted(missing)}")
    digest = hashes.Hash(HASHES[hash_name]())
    for bank, indices in selection:
        for index in indices:
            digest.update(pcrs[bank][index])
    if not hmac.compare_digest(digest.finalize(), bytes(attest.attested.quote.pcrDigest)):
        raise EvidenceError(EvidenceReason.PCR_DIGEST, "the PCR values sent do not match the quoted PCR digest")
    info = attest.clockInfo
    return QuotedPcrs(pcrs, int(info.clock), int(info.resetCount), int(attest.firmwareVersion))
