"""Proposal selection for IKE and ESP SAs (RFC 7296 §2.7, §3.3.6).

Only modern AEAD suites are acceptable: ENCR AES-GCM-16 (128/256, RFC 5282) or
ChaCha20-Poly1305 (RFC 7634), PRF HMAC-SHA2, DH 19/20/21/31. A proposal that also
lists INTEG transforms (other than NONE) is not AEAD-only and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.ikev2.codec import Proposal, Transform
from gateway.ikev2.constants import DhGroup, Encr, Prf, Protocol, TransformType
from gateway.ikev2.crypto import Suite

DEFAULT_ENCR: tuple[tuple[int, int], ...] = (
    (Encr.AES_GCM_16, 256), (Encr.AES_GCM_16, 128), (Encr.CHACHA20_POLY1305, 256))
DEFAULT_PRF = (Prf.HMAC_SHA2_256, Prf.HMAC_SHA2_384, Prf.HMAC_SHA2_512)
DEFAULT_DH = (DhGroup.ECP_256, DhGroup.CURVE_25519, DhGroup.ECP_384, DhGroup.ECP_521)


@dataclass(frozen=True)
class Preferences:
    """Responder's acceptable transforms, most preferred first."""

    encr: tuple[tuple[int, int], ...] = DEFAULT_ENCR
    prf: tuple[int, ...] = DEFAULT_PRF
    dh: tuple[int, ...] = DEFAULT_DH


@dataclass(frozen=True)
class IkeChoice:
    """Outcome of IKE proposal selection: a suite, or the group to ask for (INVALID_KE)."""

    proposal: Proposal | None
    suite: Suite | None
    want_group: int | None = None


def _encr_of(t: Transform) -> tuple[int, int]:
    if t.id == Encr.CHACHA20_POLY1305:
        return (t.id, 256)
    return (t.id, t.key_length or 0)


def _pick_encr(prop: Proposal, prefs: Preferences) -> Transform | None:
    offered = {_encr_of(t): t for t in prop.of_type(TransformType.ENCR)}
    return next((offered[e] for e in prefs.encr if e in offered), None)


def _aead_only(prop: Proposal) -> bool:
    return all(t.id == 0 for t in prop.of_type(TransformType.INTEG))


def _pick(prop: Proposal, ttype: int, prefs: tuple[int, ...]) -> Transform | None:
    offered = {t.id: t for t in prop.of_type(ttype)}
    return next((offered[i] for i in prefs if i in offered), None)


def select_ike(proposals: tuple[Proposal, ...], prefs: Preferences, ke_group: int) -> IkeChoice:
    """Pick the first acceptable IKE proposal in the initiator's order (§2.7).

    The DH group is the responder's most preferred group among those offered; if the
    KE payload carries another group, the caller answers INVALID_KE_PAYLOAD (§1.2)."""
    for prop in proposals:
        if prop.protocol != Protocol.IKE or not _aead_only(prop):
            continue
        encr = _pick_encr(prop, prefs)
        prf_t = _pick(prop, TransformType.PRF, prefs.prf)
        dh_t = _pick(prop, TransformType.DH, prefs.dh)
        if encr is None or prf_t is None or dh_t is None:
            continue
        if dh_t.id != ke_group:
            return IkeChoice(None, None, want_group=dh_t.id)
        suite = Suite(encr.id, _encr_of(encr)[1], prf_t.id, dh_t.id)
        chosen = Proposal(prop.num, Protocol.IKE, b"", (encr, prf_t, dh_t))
        return IkeChoice(chosen, suite)
    return IkeChoice(None, None)


@dataclass(frozen=True)
class EspChoice:
    """Selected ESP proposal: the peer's SPI and the transforms we accept."""

    proposal: Proposal
    peer_spi: bytes
    dh: int


def select_esp(proposals: tuple[Proposal, ...], prefs: Preferences, with_dh: bool) -> EspChoice | None:
    """Pick the first acceptable ESP proposal (AES-GCM / ChaCha20 + ESN, §3.3.3)."""
    for prop in proposals:
        if prop.protocol != Protocol.ESP or len(prop.spi) != 4 or not _aead_only(prop):
            continue
        encr = _pick_encr(prop, prefs)
        esn = _pick(prop, TransformType.ESN, (0, 1))
        if encr is None or esn is None:
            continue
        transforms: tuple[Transform, ...] = (encr, esn)
        dh = 0
        if with_dh and prop.of_type(TransformType.DH):
            dh_t = _pick(prop, TransformType.DH, prefs.dh)
            if dh_t is None:
                continue
            dh = dh_t.id
            transforms = (encr, dh_t, esn)
        return EspChoice(Proposal(prop.num, Protocol.ESP, b"", transforms), prop.spi, dh)
    return None
