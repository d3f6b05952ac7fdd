"""ocsp/push/probe.py: how a gateway's answer to the signed test event is judged (pure logic;
the real receivers are exercised in tests/incident/test_push.py)."""

from __future__ import annotations

import json

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import ErrorKind
from ocsp.push.probe import _judge

TARGET = "https://gw.example.test:8444/v1/revocations"


def _resp(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body, request=httpx.Request("POST", TARGET))


def test_responder_answers() -> None:
    ok = _judge("responder", TARGET, _resp(200, b'{"accepted": true, "test": true, "terminated_sas": 0}'))
    assert ok.ok
    untrusted = _judge("responder", TARGET, _resp(401, b'{"accepted": false, "error": "x5c does not chain"}'))
    assert not untrusted.ok and untrusted.kind is ErrorKind.BAD_REQUEST and "--ca-bundle" in untrusted.detail
    old = _judge("responder", TARGET, _resp(400, b'{"accepted": false, "error": "unknown event type \'test\'"}'))
    assert not old.ok and "predates test events" in old.detail
    assert "no ikepki push receiver" in _judge("responder", TARGET, _resp(404, b"not found")).detail
    # a 200 that is not the responder's acknowledgement (e.g. some other web server) is not accepted
    assert not _judge("responder", TARGET, _resp(200, b"<html>hello</html>")).ok
    assert not _judge("responder", TARGET, _resp(200, b'{"accepted": true}')).ok


def test_webhook_answers() -> None:
    assert _judge("webhook", TARGET, _resp(204, b"")).ok
    refused = _judge("webhook", TARGET, _resp(403, b"nope"))
    assert not refused.ok and "refused" in refused.detail


json_body = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["responder", "webhook"]), status=st.integers(100, 599),
       body=st.one_of(st.binary(max_size=200), json_body.map(lambda v: json.dumps(v).encode())))
def test_any_answer_is_judged_without_crashing(kind: str, status: int, body: bytes) -> None:
    result = _judge(kind, TARGET, _resp(status, body))
    assert len(result.detail) <= 300
    if result.ok:
        assert 200 <= status < 300
        if kind == "responder":
            parsed = json.loads(body)
            assert parsed["accepted"] is True and parsed["test"] is True
    else:
        assert result.kind is ErrorKind.BAD_REQUEST
