"""Device identities derived from a TPM endorsement key.

* ``permanent-identifier`` (RFC 4043 §2, draft-ietf-acme-device-attest-09 §3): the identifier value
  is the **lower-case hex SHA-256 of the DER SubjectPublicKeyInfo of the EK** (64 characters, never
  contains "/"), and the assigner is :data:`EK_SPKI_SHA256_ASSIGNER` = ``<IKEPKI_OID_ARC>.3.1``, an
  ikepki OID (see :mod:`ca.oids`; arc 3 = identifier assigners) that names exactly this derivation.  The EK public key
  is stable for the life of the TPM (re-certification of the EK does not change it), while the EK
  certificate serial is not; that is why the SPKI, not the certificate, is hashed.
* ``hardware-module`` (RFC 4108 §5, draft §4): ``hwType`` = TCG TPM 2.0 (2.23.133.1.2),
  ``hwSerialNum`` = the same 64 ASCII hex characters (the draft requires a UTF-8 serial without "/").

The order identifier strings are ``"<hex>/<assigner-oid>"`` and ``"<hex>/2.23.133.1.2"``.

These are SAN kinds of the core's rule book (like :mod:`ca.identity` for IKEv2 IDs): ACME orders them
(``device-attest-01``), TPM attestation derives and verifies them, profiles allow them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ca.oids import IKEPKI_ARC

ID_ON_PERMANENT_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.3")  # RFC 4043 §2
ID_ON_HARDWARE_MODULE_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4")  # RFC 4108 §5
TCG_TPM20_HW_TYPE = "2.23.133.1.2"  # TCG "TPM 2.0" hardware type
EK_SPKI_SHA256_ASSIGNER = f"{IKEPKI_ARC}.3.1"  # ikepki assigner: hex SHA-256(EK SPKI)

_MAX_OTHERNAME_DER = 512
_OID_RE = re.compile(r"^(?:[01]\.(?:[0-9]|[1-3][0-9])|2\.(?:0|[1-9][0-9]*))(?:\.(?:0|[1-9][0-9]*))*$")


class _PermanentIdentifierAsn1(core.Sequence):
    _fields = [
        ("identifierValue", core.UTF8String, {"optional": True}),
        ("assigner", core.ObjectIdentifier, {"optional": True}),
    ]


class _HardwareModuleNameAsn1(core.Sequence):
    _fields = [
        ("hwType", core.ObjectIdentifier),
        ("hwSerialNum", core.OctetString),
    ]


def spki_sha256_hex(public_key: PublicKeyTypes) -> str:
    """Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _check_component(value: str, what: str) -> None:
    if not value or "/" in value or len(value) > 256:
        raise ValueError(f"{what} must be 1..256 characters without '/' (draft-ietf-acme-device-attest-09 §3.1)")


@dataclass(frozen=True)
class PermanentIdentifier:
    """RFC 4043 PermanentIdentifier ``{identifierValue, assigner}``."""

    value: str
    assigner: str | None = None

    def __post_init__(self) -> None:
        _check_component(self.value, "identifierValue")
        if self.assigner is not None and not _OID_RE.match(self.assigner):
            raise ValueError("assigner must be a dotted-decimal OID")

    @classmethod
    def from_ek(cls, ek_public_key: PublicKeyTypes) -> PermanentIdentifier:
        """The ikepki derivation (module docstring)."""
        return cls(spki_sha256_hex(ek_public_key), EK_SPKI_SHA256_ASSIGNER)

    @classmethod
    def parse_acme(cls, text: str) -> PermanentIdentifier:
        """Parse an order value ``device-identifier-value ["/" assigner-value]`` (draft §3.1 ABNF)."""
        value, sep, assigner = text.partition("/")
        return cls(value, assigner if sep else None)

    def acme_value(self) -> str:
        """The order identifier value (draft §3.1)."""
        return self.value if self.assigner is None else f"{self.value}/{self.assigner}"

    def to_other_name(self) -> x509.OtherName:
        """SAN otherName form (RFC 4043 §2)."""
        asn = _PermanentIdentifierAsn1({"identifierValue": self.value, "assigner": self.assigner})
        return x509.OtherName(ID_ON_PERMANENT_IDENTIFIER, asn.dump())

    @classmethod
    def from_other_name(cls, name: x509.OtherName) -> PermanentIdentifier:
        """Decode an otherName (raises ValueError on anything unexpected)."""
        if name.type_id != ID_ON_PERMANENT_IDENTIFIER or len(name.value) > _MAX_OTHERNAME_DER:
            raise ValueError("not a bounded PermanentIdentifier otherName")
        asn = _PermanentIdentifierAsn1.load(name.value, strict=True)
        value = asn["identifierValue"].native
        assigner = asn["assigner"].native
        if not isinstance(value, str):
            raise ValueError("PermanentIdentifier without identifierValue (draft §3.2 requires it)")
        return cls(value, assigner if isinstance(assigner, str) else None)


@dataclass(frozen=True)
class HardwareModuleName:
    """RFC 4108 §5 HardwareModuleName ``{hwType, hwSerialNum}``."""

    hw_type: str
    serial: bytes

    def __post_init__(self) -> None:
        if not _OID_RE.match(self.hw_type):
            raise ValueError("hwType must be a dotted-decimal OID")
        _check_component(self.serial.decode("utf-8"), "hwSerialNum")

    @classmethod
    def from_ek(cls, ek_public_key: PublicKeyTypes) -> HardwareModuleName:
        """The ikepki derivation (module docstring)."""
        return cls(TCG_TPM20_HW_TYPE, spki_sha256_hex(ek_public_key).encode("ascii"))

    def acme_value(self) -> str:
        """The order identifier value ``hw-serial-num-value "/" hw-type-value`` (draft §4.1)."""
        return f"{self.serial.decode('utf-8')}/{self.hw_type}"

    def to_other_name(self) -> x509.OtherName:
        """SAN otherName form (RFC 4108 §5)."""
        asn = _HardwareModuleNameAsn1({"hwType": self.hw_type, "hwSerialNum": self.serial})
        return x509.OtherName(ID_ON_HARDWARE_MODULE_NAME, asn.dump())

    @classmethod
    def from_other_name(cls, name: x509.OtherName) -> HardwareModuleName:
        """Decode an otherName (raises ValueError on anything unexpected)."""
        if name.type_id != ID_ON_HARDWARE_MODULE_NAME or len(name.value) > _MAX_OTHERNAME_DER:
            raise ValueError("not a bounded HardwareModuleName otherName")
        asn = _HardwareModuleNameAsn1.load(name.value, strict=True)
        return cls(str(asn["hwType"].native), bytes(asn["hwSerialNum"].native))


@dataclass(frozen=True)
class TpmDescription:
    """TPM manufacturer / model / version from the EK SAN dirName (TCG EK Credential Profile §3.2.9)."""

    manufacturer: str
    model: str
    version: str


PERMANENT_IDENTIFIER = "permanent-identifier"
HARDWARE_MODULE = "hardware-module"


def parse_device_identifier(identifier_type: str, value: str) -> PermanentIdentifier | HardwareModuleName:
    """Order identifier → typed identifier (draft-ietf-acme-device-attest-09 §3.1 / §4.1 ABNF); ValueError
    when malformed."""
    if identifier_type == PERMANENT_IDENTIFIER:
        return PermanentIdentifier.parse_acme(value)
    if identifier_type == HARDWARE_MODULE:
        serial, sep, hw_type = value.partition("/")
        if not sep:
            raise ValueError("hardware-module value needs '<serial>/<hwType OID>'")
        return HardwareModuleName(hw_type, serial.encode("utf-8"))
    raise ValueError(f"not a device identifier type: {identifier_type}")


def device_general_name(identifier_type: str, value: str) -> x509.GeneralName:
    """SAN form of a device identifier (RFC 4043 / RFC 4108 otherName; draft-09 §3.2 / §4.2)."""
    return parse_device_identifier(identifier_type, value).to_other_name()


def spki_b64(public_key: PublicKeyTypes) -> str:
    """base64url (unpadded) DER SubjectPublicKeyInfo: how an attested key travels in ACME evidence."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(spki).decode("ascii").rstrip("=")


def attested_key_matches(attested_spki_b64: object, public_key: PublicKeyTypes) -> bool:
    """Whether ``public_key`` is the attested key (``attested_spki`` evidence, :func:`spki_b64`); constant time."""
    if not isinstance(attested_spki_b64, str):
        return False
    try:
        attested = base64.urlsafe_b64decode(attested_spki_b64 + "=" * (-len(attested_spki_b64) % 4))
    except ValueError:
        return False
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hmac.compare_digest(attested, spki)
