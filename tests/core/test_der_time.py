"""DER times (issue 21 defect 2): ``der_generalized_time`` wrote years < 1000 with ``strftime("%Y")``
("10101000000Z" for year 1), which pkilint, openssl and cryptography all reject. Round-trip every
representable instant through an independent decoder (asn1crypto) and check the RFC 5280 forms."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from asn1crypto import core
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.der import der_generalized_time, der_time

aware = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=-23, minutes=-59)),
                                                timezone(timedelta(hours=14))]))


def _decoded(der: bytes) -> tuple[int, str]:
    assert der[1] == len(der) - 2
    return der[0], der[2:].decode("ascii")


@settings(max_examples=300, deadline=None)
@given(aware)
def test_generalized_time_round_trip(at: datetime) -> None:
    der = der_generalized_time(at)
    tag, text = _decoded(der)
    assert tag == 0x18 and re.fullmatch(r"\d{14}Z", text), text  # §4.1.2.5.2: YYYYMMDDHHMMSSZ
    decoded = core.GeneralizedTime.load(der).native
    expected = at.astimezone(UTC).replace(microsecond=0)
    if hasattr(decoded, "year") and not isinstance(decoded, datetime):  # asn1crypto's extended_datetime (year 0)
        pytest.fail(f"decoded out of range: {decoded!r}")
    assert decoded == expected


@settings(max_examples=300, deadline=None)
@given(aware)
def test_validity_time_form(at: datetime) -> None:
    """§4.1.2.5: UTCTime for 1950-2049, GeneralizedTime otherwise, both decoding to the same instant."""
    der = der_time(at)
    utc = at.astimezone(UTC)
    tag, text = _decoded(der)
    if 1950 <= utc.year < 2050:
        assert tag == 0x17 and re.fullmatch(r"\d{12}Z", text), text
        assert core.UTCTime.load(der).native == utc.replace(microsecond=0)
    else:
        assert der == der_generalized_time(at)


def test_year_one_and_naive() -> None:
    assert der_generalized_time(datetime(1, 1, 1, tzinfo=UTC)) == b"\x18\x0f00010101000000Z"
    assert der_time(datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC))[0] == 0x18  # not "49" = 2049
    with pytest.raises(ValueError):
        der_generalized_time(datetime(2026, 1, 1))
