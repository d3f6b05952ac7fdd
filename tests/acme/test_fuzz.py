"""Random JWS structures thrown at every endpoint: never a 5xx, always a problem document with a
fresh Replay-Nonce, and nothing stored (no account, order or certificate appears)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from acme_helpers import AcmeServer, RawClient, b64u, jwk_of, sign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PATHS = ["/new-account", "/new-order", "/revoke-cert", "/key-change", "/acct/x", "/acct/x/orders", "/order/x",
         "/order/x/finalize", "/authz/x", "/chall/x", "/cert/x", "/renewal-info/x.y", "/nope"]
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=40),
                      st.floats(allow_nan=False))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
b64_text = st.one_of(st.binary(max_size=80).map(b64u), st.text(max_size=30))


@pytest.fixture(scope="module")
def fuzz_client(acme: AcmeServer) -> Iterator[RawClient]:
    client = RawClient(acme)
    assert client.register(acme.eab()).status_code == 201
    yield client
    client.http.close()


def counts(acme: AcmeServer) -> tuple[int, ...]:
    with sqlite3.connect(acme.dir / "ikepki.db") as db:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                     for t in ("acme_accounts", "acme_orders", "acme_eab_keys", "certificates"))


@st.composite
def requests(draw: Any, client: RawClient) -> tuple[str, bytes, str]:
    path = draw(st.sampled_from(PATHS))
    url = client.server.base + path
    kind = draw(st.sampled_from(["bytes", "json", "jws", "signed"]))
    if kind == "bytes":
        return path, draw(st.binary(max_size=300)), "application/jose+json"
    if kind == "json":
        return path, json.dumps(draw(json_value)).encode(), draw(st.sampled_from(["application/jose+json",
                                                                                   "text/plain"]))
    header: dict[str, Any] = draw(st.dictionaries(st.sampled_from(["alg", "nonce", "url", "kid", "jwk", "crit",
                                                                   "b64", "typ"]), json_value, max_size=5))
    if draw(st.booleans()):
        header["alg"] = draw(st.sampled_from(["ES256", "ES384", "RS256", "EdDSA", "none", "HS256", "ES512"]))
    if draw(st.booleans()):
        header["url"] = url
    if draw(st.booleans()):
        header["kid" if draw(st.booleans()) else "jwk"] = client.kid if draw(st.booleans()) else jwk_of(client.key)
    payload = draw(st.one_of(st.just(""), json_value.map(lambda v: b64u(json.dumps(v).encode())), b64_text))
    protected = b64u(json.dumps(header).encode())
    if kind == "signed":  # a genuine signature over the random content, with a real nonce
        header["nonce"] = client.nonce()
        protected = b64u(json.dumps(header).encode())
        signature = b64u(sign(client.key, f"{protected}.{payload}".encode()))
    else:
        signature = draw(b64_text)
    obj: dict[str, Any] = {"protected": draw(st.one_of(st.just(protected), b64_text)), "payload": payload,
                           "signature": signature}
    if draw(st.integers(0, 9)) == 0:
        obj["header"] = {"alg": "none"}
    return path, json.dumps(obj).encode(), "application/jose+json"


def test_random_jws_never_5xx_and_stores_nothing(acme: AcmeServer, fuzz_client: RawClient) -> None:
    before = counts(acme)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        path, body, ctype = data.draw(requests(fuzz_client))
        method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET", "HEAD", "PUT"]))
        resp = fuzz_client.http.request(method, acme.base + path, content=body, headers={"Content-Type": ctype})
        assert resp.status_code < 500, (path, body, resp.text)
        assert resp.headers.get("Replay-Nonce")
        if resp.status_code >= 400 and method != "HEAD":
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["type"].startswith("urn:ietf:params:acme:error:")

    run()
    assert counts(acme) == before
