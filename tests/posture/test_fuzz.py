"""Hypothesis over every posture parser: any input gives a value or the parser's own error, never
another exception, and round trips hold."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from enrollment.posture.errors import EvidenceError, EvidenceReason
from enrollment.posture.eventlog import encode_event, parse_event_log, replay, secure_boot_state, spec_id_event
from enrollment.posture.evidence import Evidence, canonical_facts, parse_pcrs
from enrollment.posture.policy import PolicyError, PosturePolicy, Verdict, version_tuple
from enrollment.posture.quote import parse_quote, parse_signature

json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=40) | st.floats(allow_nan=False)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=10), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_quote_and_signature_parsers_fail_cleanly(data: bytes) -> None:
    for parse in (parse_quote, parse_signature):
        try:
            parse(data)
        except EvidenceError as exc:
            assert exc.reason in (EvidenceReason.MALFORMED, EvidenceReason.NOT_A_QUOTE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_event_log_parser_fails_cleanly(data: bytes) -> None:
    for blob in (data, spec_id_event() + data):
        try:
            events = parse_event_log(blob)
            replay(events, "sha256")
            secure_boot_state(events)
        except EvidenceError as exc:
            assert exc.reason is EvidenceReason.EVENT_LOG


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 23), st.integers(0, 2**32 - 1), st.binary(max_size=64)), max_size=20))
def test_event_log_round_trip_and_replay(events: list[tuple[int, int, bytes]]) -> None:
    log = spec_id_event() + b"".join(encode_event(p, t, d) for p, t, d in events)
    parsed = parse_event_log(log)
    assert [(e.pcr, e.type, e.data) for e in parsed] == events
    expected: dict[int, bytes] = {}
    for p, t, d in events:
        if t != 3:
            expected[p] = hashlib.sha256(expected.get(p, b"\0" * 32) + hashlib.sha256(d).digest()).digest()
    assert replay(parsed, "sha256") == expected


@settings(max_examples=300, deadline=None)
@given(json_value)
def test_evidence_and_pcrs_parsers_fail_cleanly(body: object) -> None:
    for parse in (Evidence.parse, parse_pcrs, canonical_facts):
        try:
            parse(body)
        except EvidenceError as exc:
            assert exc.reason is EvidenceReason.MALFORMED


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20), st.booleans() | st.integers(-1000, 1000)
                       | st.text(max_size=50) | st.none(), max_size=10))
def test_canonical_facts_are_order_independent(facts: dict[str, object]) -> None:
    reordered = dict(reversed(list(facts.items())))
    assert canonical_facts(facts) == canonical_facts(reordered)


@settings(max_examples=200, deadline=None)
@given(json_value)
def test_policy_parser_fails_cleanly(doc: object) -> None:
    for text in (yaml.safe_dump(doc), yaml.safe_dump({"classes": doc}), yaml.safe_dump({"classes": {"a": doc}})):
        try:
            policy = PosturePolicy.from_yaml(text)
        except PolicyError:
            continue
        result = policy.evaluate("dev", {}, {}, None, datetime(2026, 1, 1, tzinfo=UTC))
        assert result.verdict in Verdict


@given(st.text(max_size=80))
def test_version_tuple_total(text: str) -> None:
    assert all(isinstance(p, int) for p in version_tuple(text))
