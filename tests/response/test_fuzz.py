"""Hypothesis: every inbound parser either returns alerts or refuses with HookRefused — no other
exception, whatever the body or headers."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from response.alerts import flatten
from response.errors import HookRefused
from response.formats import alertmanager, generic, keylime

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)
bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
am_like = st.fixed_dictionaries({"version": st.sampled_from(["4", "3", 4]), "alerts": st.lists(
    st.fixed_dictionaries({"status": st.sampled_from(["firing", "resolved", "x"]),
                           "fingerprint": st.text(max_size=140), "labels": json_values,
                           "annotations": json_values, "startsAt": json_values, "endsAt": json_values}),
    max_size=3)}).map(lambda v: json.dumps(v).encode())
KEY = generic.decode_secret("whsec_" + "a" * 43)


@settings(max_examples=150, deadline=None)
@given(bodies | am_like)
def test_alertmanager_parse(body: bytes) -> None:
    try:
        for alert in alertmanager.parse("am", body):
            assert alert.fingerprint and alert.source == "am"
    except HookRefused:
        pass


@settings(max_examples=150, deadline=None)
@given(bodies | st.builds(lambda m, s: json.dumps({"msg": m, "signature": s}).encode(),
                          json_values.map(json.dumps), json_values))
def test_keylime_parse_unsigned_allowed(body: bytes) -> None:
    with contextlib.suppress(HookRefused):
        keylime.parse("kl", body, None, allow_unsigned=True)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
                       st.text(max_size=60), max_size=3), bodies)
def test_generic_verify_and_parse(headers: dict[str, str], body: bytes) -> None:
    now = datetime.now(UTC)
    try:
        signed = generic.verify(headers, body, [KEY], now, 300)
    except HookRefused:
        signed = generic.Signed("id", int(now.timestamp()))
    with contextlib.suppress(HookRefused):
        generic.parse("soar", body, signed, "fingerprint")


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_flatten_is_bounded(value: object) -> None:
    flat = flatten(value)
    assert len(flat) <= 256 and all(isinstance(v, str) and len(v) <= 1024 for v in flat.values())
