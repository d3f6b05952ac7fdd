"""CRL construction (RFC 5280 §5.1) from precomputed entry DER plus one signature.

The revokedCertificates entries are stored at revocation time (:mod:`ca.crl_entry`), so a
rebuild is concatenation, one hash and one HSM signature: 1,000,000 entries take well under a
second (the cryptography builder needs seconds and must never be fed entries one by one: its
``add_revoked_certificate`` copies the list each call, which is quadratic).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from ca.crl_entry import crl_entry_der
from ca.der import der_bool, der_integer, der_octets, der_oid, der_seq, der_time, der_tlv, explicit
from ca.keys.signer import SigningKey
from ca.model import RevocationReason
from ocsp.crl_lint import lint_crl_tbs
from ocsp.signing import algorithm_identifier, signed

_AKI = der_oid("2.5.29.35")
_CRL_NUMBER = der_oid("2.5.29.20")
_DELTA_INDICATOR = der_oid("2.5.29.27")
_FRESHEST = der_oid("2.5.29.46")


@dataclass(frozen=True)
class CrlIssuer:
    """Who signs a CRL: name DER, key identifier, key, and the delta URL (FreshestCRL) if any."""

    id: str
    certificate: x509.Certificate
    key: SigningKey
    delta_url: str | None = None

    @property
    def name_der(self) -> bytes:
        return self.certificate.subject.public_bytes()

    @property
    def key_id(self) -> bytes:
        return self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def crl_extensions(key_id: bytes, number: int, delta_base: int | None, freshest_url: str | None) -> bytes:
    """[0] EXPLICIT Extensions: AKI (§5.2.1), cRLNumber (§5.2.3), deltaCRLIndicator (critical,
    §5.2.4) or FreshestCRL (§5.2.6)."""
    exts = [der_seq(_AKI, der_octets(der_seq(der_tlv(0x80, key_id)))),
            der_seq(_CRL_NUMBER, der_octets(der_integer(number)))]
    if delta_base is not None:
        exts.append(der_seq(_DELTA_INDICATOR, der_bool(True), der_octets(der_integer(delta_base))))
    elif freshest_url:
        dp = der_seq(explicit(0, explicit(0, der_tlv(0x86, freshest_url.encode()))))
        exts.append(der_seq(_FRESHEST, der_octets(der_seq(dp))))
    return explicit(0, der_seq(*exts))


def build_tbs(issuer_name_der: bytes, alg_id: bytes, entries_der: bytes, this_update: datetime,
              next_update: datetime, extensions: bytes) -> bytes:
    """TBSCertList; revokedCertificates is omitted when empty (§5.1.2.6)."""
    revoked = der_tlv(0x30, entries_der) if entries_der else b""
    return der_seq(b"\x02\x01\x01", alg_id, issuer_name_der, der_time(this_update), der_time(next_update), revoked,
                   extensions)


def build_crl(issuer: CrlIssuer, entries: Iterable[bytes], number: int, this_update: datetime,
              next_update: datetime, *, delta_base: int | None = None, entries_linted: bool = False
              ) -> tuple[bytes, int]:
    """A signed CertificateList DER and its entry count. Blocking (HSM signature).

    The TBSCertList is linted before it is signed (:mod:`ocsp.crl_lint`); each entry too unless
    ``entries_linted`` (the publisher's entry cache lints every entry once, as it is loaded)."""
    entry_list = entries if isinstance(entries, list) else list(entries)
    alg_id = algorithm_identifier(issuer.key)
    exts = crl_extensions(issuer.key_id, number, delta_base, None if delta_base is not None else issuer.delta_url)
    tbs = build_tbs(issuer.name_der, alg_id, b"".join(entry_list), this_update, next_update, exts)
    lint_crl_tbs(tbs, alg_id=alg_id, issuer_name_der=issuer.name_der, key_id=issuer.key_id, number=number,
                 delta_base=delta_base, entries=entry_list, entries_linted=entries_linted)
    return signed(issuer.key, tbs, alg_id), len(entry_list)


def remove_from_crl_entries(serials: Iterable[int], at: datetime, skip: set[int]) -> list[bytes]:
    """Delta CRL entries with reason removeFromCRL for released holds (RFC 5280 §5.3.1)."""
    return [crl_entry_der(s, at, RevocationReason.removeFromCRL.value) for s in serials if s not in skip]


def to_pem(der: bytes) -> bytes:
    """``-----BEGIN X509 CRL-----`` armour (RFC 7468 §6)."""
    b64 = base64.b64encode(der)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return b"-----BEGIN X509 CRL-----\n" + b"\n".join(lines) + b"\n-----END X509 CRL-----\n"
