"""Random bytes, parameters, headers and JSON at every route of every HTTP surface of the
in-process ASGI app (both listeners; ACME, EST, SCEP, OCSP/CRL, attestation, device posture, admin
incl. the EST, SCEP, incident and posture routes, alert hooks, health): nothing may answer 5xx
(issue 21, defect 6). Examples are bounded so each surface runs in seconds; hypothesis shrinks any
5xx to a minimal request."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.service.mounts import HTTP, HTTPS
from tests.hostile_input.conftest import InProcess

ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "acme": tuple((HTTPS, f"/acme/{p}") for p in (
        "directory", "new-nonce", "new-account", "new-order", "revoke-cert", "key-change", "renewal-info/x.y",
        "acct/x", "order/x", "order/x/finalize", "authz/x", "chall/x/y", "cert/x", "")),
    "est": tuple((HTTPS, f"/.well-known/est/{p}") for p in (
        "cacerts", "csrattrs", "simpleenroll", "simplereenroll", "serverkeygen", "machine/simpleenroll",
        "nolabel/cacerts", "machine/csrattrs", "")),
    "scep": tuple((listener, p) for listener in (HTTP, HTTPS) for p in ("/scep", "/scep/machine", "/scep/nope")),
    "ocsp": ((HTTP, "/ocsp"), (HTTP, "/ocsp/MAA="), (HTTP, "/crl/ec.crl"), (HTTP, "/crl/ec-delta.crl"),
             (HTTP, "/crl/x")),
    "attestation": ((HTTPS, "/attest/v1/ak/start"), (HTTPS, "/attest/v1/ak/finish"), (HTTPS, "/attest/v1/x")),
    "posture": ((HTTPS, "/posture/v1/nonce"), (HTTPS, "/posture/v1/evidence"), (HTTPS, "/posture/v1/x")),
    "admin": tuple((HTTPS, f"/admin/v1/{p}") for p in (
        "whoami", "certificates", "certificates/1f", "revocations", "revocations/1f", "deliveries/search",
        "devices/d1", "devices/d1/block", "gateways", "gateways/g1", "gateways/g1/health", "tokens", "tokens/x",
        "est/registrations", "est/pending", "scep/challenges", "scep/transactions", "incidents", "incidents/x",
        "incidents/x/approve", "incidents/x/reject", "posture", "posture?device=d1", "openapi.json")),
    "hooks": ((HTTPS, "/hooks/v1/alertmanager"), (HTTPS, "/hooks/v1/x"), (HTTPS, "/hooks/v1/openapi.json")),
    "health": tuple((listener, p) for listener in (HTTP, HTTPS) for p in (
        "/healthz", "/readyz", "/metrics", "/ca/root.pem", "/ca/ec.der", "/ca/nope.pem", "/nope")),
}
KEYS = ["akCertificate", "nonce", "quote", "pcrs", "facts", "eventLog", "device", "verdict",
        "operation", "message", "offset", "limit", "serial", "profile", "status", "csr", "identifiers",
        "notAfter", "notBefore", "reason", "invalidity_date", "serials", "dry_run", "name", "role", "devices",
        "payload", "protected", "signature", "subject_contains", "expires_before", "x"]
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=True) | st.text(max_size=40)
           | st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00Z", "GetCACaps", "PKIOperation",
                              "GetCACert", "GetNextCACert", "-1", "9223372036854775808", "machine", "%", "\x00"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5),
                           max_leaves=12)
bodies = (st.binary(max_size=600) | json_values.map(lambda v: json.dumps(v).encode())
          | st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6).map(lambda v: json.dumps(v).encode()))
query = st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=6), st.text(max_size=30) | scalars.map(str)),
                 max_size=12)
header_names = st.sampled_from(["content-type", "accept", "authorization", "content-length", "x-forwarded-for",
                                "ssl-client-cert", "range", "if-none-match", "content-encoding", "x"])
header_values = (st.sampled_from(["application/jose+json", "application/pkcs10", "application/x-pki-message",
                                  "application/ocsp-request", "application/json", "Basic Og==", "Basic !!",
                                  "Bearer x", "bytes=5-1", "gzip", "*/*"])
                 | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60))


@pytest.fixture(scope="module")
def viewer_token(deployment: Any) -> str:
    """A viewer token: the fuzzer reaches every admin handler's validation but cannot change state."""
    token = secrets.token_urlsafe(24)
    deployment.store.add_admin_token(f"fuzz-viewer-{secrets.token_hex(3)}", "viewer", token, datetime.now(UTC))
    return token


def _fuzz(app: InProcess, surface: str, viewer: str, data: st.DataObject) -> None:
    listener, path = data.draw(st.sampled_from(ROUTES[surface]), label="route")
    suffix = data.draw(st.sampled_from(["", "/", "/x", "/..", "/%00", "//a"]), label="suffix")
    method = data.draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]), label="method")
    params = data.draw(query, label="query")
    headers = dict(data.draw(st.lists(st.tuples(header_names, header_values), max_size=5), label="headers"))
    headers.pop("content-length", None)  # the transport computes it; a lying one is the slow-client module's
    if surface == "admin" and data.draw(st.booleans(), label="authenticated"):
        headers["authorization"] = f"Bearer {app.token if method in ('GET', 'HEAD') else viewer}"
    body = data.draw(bodies, label="body") if method not in ("GET", "HEAD") else b""
    response = app.request(listener, method, path + suffix, params=params, headers=headers, content=body)
    assert response.status_code < 500, (method, path + suffix, params, headers, body[:200], response.status_code,
                                        response.text[:300])


@pytest.mark.parametrize("surface", sorted(ROUTES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_no_5xx_for_any_input(app: InProcess, viewer_token: str, surface: str, data: st.DataObject) -> None:
    _fuzz(app, surface, viewer_token, data)
