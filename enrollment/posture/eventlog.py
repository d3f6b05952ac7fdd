"""TCG PC Client boot event log (crypto-agile format): bounded parser, replay and facts.

TCG PC Client Platform Firmware Profile 1.05 §10.2.1 (first event, TCG_PCClientPCREvent in SHA-1
format carrying the ``Spec ID Event03`` structure §10.4.5.1), §10.2.2 TCG_PCR_EVENT2 (pcrIndex,
eventType, TPML_DIGEST_VALUES, event), §10.4.1 event types; all integers little-endian.
``EV_NO_ACTION`` events are not extended (§10.4.1).  Replay: every PCR starts at zero and is extended
``PCR := H(PCR ‖ digest)`` per event.  ``EV_EFI_VARIABLE_DRIVER_CONFIG`` events carry a
UEFI_VARIABLE_DATA (§10.3.3); the ``SecureBoot`` variable's first byte is the Secure Boot state.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from enrollment.posture.errors import EvidenceError, EvidenceReason

EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
ALG_BANKS = {0x0004: ("sha1", 20), 0x000B: ("sha256", 32), 0x000C: ("sha384", 48), 0x000D: ("sha512", 64)}
BANK_ALGS = {name: (alg, size) for alg, (name, size) in ALG_BANKS.items()}
MAX_EVENTS = 4096
MAX_EVENT_DATA = 64 * 1024
MAX_LOG = 1024 * 1024


@dataclass(frozen=True)
class Event:
    pcr: int
    type: int
    digests: dict[str, bytes]
    data: bytes


def _fail(detail: str) -> EvidenceError:
    return EvidenceError(EvidenceReason.EVENT_LOG, detail)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _fail("event log truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def parse_event_log(data: bytes) -> list[Event]:
    """All TCG_PCR_EVENT2 entries after the Spec ID event; EvidenceError(event-log) when malformed."""
    if not 0 < len(data) <= MAX_LOG:
        raise _fail(f"event log empty or larger than {MAX_LOG} bytes")
    r = _Reader(data)
    pcr, etype = r.u32(), r.u32()
    r.take(20)
    spec = _Reader(r.take(_bounded(r.u32())))
    if etype != EV_NO_ACTION or pcr != 0 or spec.take(16) != SPEC_ID_SIGNATURE:
        raise _fail("first event is not the Spec ID Event03 (crypto-agile log required)")
    spec.take(4 + 4)  # platformClass, version minor/major, errata, uintnSize
    sizes: dict[int, int] = {}
    for _ in range(_count(spec.u32(), 8)):
        alg, size = spec.u16(), spec.u16()
        if alg in ALG_BANKS and ALG_BANKS[alg][1] != size:
            raise _fail(f"Spec ID event gives a wrong size for algorithm {alg:#x}")
        if size > 64:
            raise _fail("digest size above 64")
        sizes[alg] = size
    events: list[Event] = []
    while not r.done:
        if len(events) >= MAX_EVENTS:
            raise _fail(f"more than {MAX_EVENTS} events")
        pcr, etype = r.u32(), r.u32()
        if pcr > 23:
            raise _fail(f"PCR index {pcr} out of range")
        digests: dict[str, bytes] = {}
        for _ in range(_count(r.u32(), len(sizes))):
            alg = r.u16()
            if alg not in sizes:
                raise _fail(f"digest algorithm {alg:#x} not declared in the Spec ID event")
            value = r.take(sizes[alg])
            if alg in ALG_BANKS:
                digests[ALG_BANKS[alg][0]] = value
        events.append(Event(pcr, etype, digests, r.take(_bounded(r.u32()))))
    return events


def _bounded(size: int) -> int:
    if size > MAX_EVENT_DATA:
        raise _fail(f"event data larger than {MAX_EVENT_DATA} bytes")
    return size


def _count(n: int, bound: int) -> int:
    if not 0 < n <= bound:
        raise _fail("digest count out of range")
    return n


def replay(events: list[Event], bank: str) -> dict[int, bytes]:
    """PCR values of ``bank`` after extending every measured event from zero."""
    size = BANK_ALGS[bank][1]
    pcrs: dict[int, bytes] = {}
    for event in events:
        if event.type == EV_NO_ACTION:
            continue
        digest = event.digests.get(bank)
        if digest is None:
            raise _fail(f"an event of PCR {event.pcr} has no {bank} digest")
        pcrs[event.pcr] = hashlib.new(bank, pcrs.get(event.pcr, b"\0" * size) + digest).digest()
    return pcrs


def secure_boot_state(events: list[Event]) -> bool | None:
    """The measured ``SecureBoot`` variable (PCR 7): True/False, None when not measured."""
    state: bool | None = None
    for event in events:
        if event.pcr != 7 or event.type != EV_EFI_VARIABLE_DRIVER_CONFIG or len(event.data) < 32:
            continue
        name_len, data_len = struct.unpack("<QQ", event.data[16:32])
        if name_len > 64 or data_len > MAX_EVENT_DATA or 32 + 2 * name_len + data_len > len(event.data):
            raise _fail("malformed UEFI_VARIABLE_DATA")
        name = event.data[32:32 + 2 * name_len].decode("utf-16-le", "replace")
        if name == "SecureBoot":
            value = event.data[32 + 2 * name_len:32 + 2 * name_len + data_len]
            state = bool(value[:1] == b"\x01")
    return state


# -- building logs (device agents without firmware logs, and tests) ---------------------------------


def spec_id_event(banks: tuple[str, ...] = ("sha256",)) -> bytes:
    body = SPEC_ID_SIGNATURE + struct.pack("<IBBBB", 0, 0, 2, 0, 2) + struct.pack("<I", len(banks))
    body += b"".join(struct.pack("<HH", *BANK_ALGS[b]) for b in banks) + b"\x00"
    return struct.pack("<II", 0, EV_NO_ACTION) + b"\0" * 20 + struct.pack("<I", len(body)) + body


def encode_event(pcr: int, etype: int, data: bytes, banks: tuple[str, ...] = ("sha256",),
                 digests: dict[str, bytes] | None = None) -> bytes:
    """One TCG_PCR_EVENT2; digests default to H(data) per bank."""
    values = digests or {b: hashlib.new(b, data).digest() for b in banks}
    out = struct.pack("<III", pcr, etype, len(values))
    out += b"".join(struct.pack("<H", BANK_ALGS[b][0]) + v for b, v in values.items())
    return out + struct.pack("<I", len(data)) + data


EFI_GLOBAL_VARIABLE = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")


def uefi_variable(name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA for an EFI global variable (PFP §10.3.3)."""
    encoded = name.encode("utf-16-le")
    return EFI_GLOBAL_VARIABLE + struct.pack("<QQ", len(name), len(value)) + encoded + value
