"""Issue 21 defect 6: client input that produced HTTP 500 (with a traceback) now gets a 4xx with
the protocol's own error body."""

from __future__ import annotations

import base64
import json

from ca.service.mounts import HTTP, HTTPS
from tests.hostile_input.conftest import InProcess


def test_admin_offset_beyond_int64_is_a_problem_400(app: InProcess) -> None:
    r = app.request(HTTPS, "GET", "/admin/v1/certificates?offset=9223372036854775808", headers=app.admin())
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")  # RFC 9457
    assert r.json()["status"] == r.status_code


def test_scep_with_many_query_parameters_is_400(app: InProcess) -> None:
    query = "operation=GetCACaps" + "".join(f"&p{i}=x" for i in range(8))
    for listener in (HTTP, HTTPS):
        r = app.request(listener, "GET", f"/scep?{query}")
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("text/plain")


def test_acme_not_after_that_overflows_is_malformed(app: InProcess) -> None:
    """The new-order payload is checked before the JWS is verified? No: it must be a valid JWS; the
    date parse is what overflowed, so it is tested on the parser every path uses."""
    import pytest

    from enrollment.acme.messages import parse_rfc3339
    from enrollment.acme.problems import AcmeProblem

    with pytest.raises(AcmeProblem) as err:
        parse_rfc3339("9999-12-31T23:59:59-23:59", "notAfter")
    assert err.value.status == 400 and err.value.document()["type"].endswith("malformed")
    assert json.dumps(err.value.document())
    assert base64  # (module used by the fuzz tests)
