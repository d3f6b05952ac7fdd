"""The DER vocabulary of the OCSP and CRL code (X.690 §10): re-exported from :mod:`ca.der`, the one
implementation of DER reading and writing. Kept for :mod:`ocsp.lint`, :mod:`ocsp.crl_lint` and their
tests; new code imports ``ca.der``."""

from __future__ import annotations

from ca.der import (
    DerError,
    der_bool,
    der_generalized_time,
    der_integer,
    der_integer_value,
    der_length,
    der_octets,
    der_oid,
    der_seq,
    der_time,
    der_tlv,
    explicit,
    read_all,
    read_tlv,
    tlv_start,
)

__all__ = ["DerError", "der_bool", "der_generalized_time", "der_integer", "der_integer_value", "der_length",
           "der_octets", "der_oid", "der_seq", "der_time", "der_tlv", "explicit", "read_all", "read_tlv",
           "tlv_start"]
