"""``ca.service.caller``: the one reading of the caller's address and bearer credential used by the
admin API, EST (ID token as Bearer) and user enrollment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ca.service.caller import bearer_token, client_ip


def test_bearer_token_reads_rfc6750_credentials_only() -> None:
    assert bearer_token("Bearer abc.def-ghi") == "abc.def-ghi"
    assert bearer_token("bEaReR  abc ") == "abc"  # scheme case-insensitive (RFC 9110 §11.1), OWS trimmed
    for header in (None, "", "Bearer", "Bearer   ", "Basic YWxpY2U6c2VjcmV0", "Token abc", "Bearerabc"):
        assert bearer_token(header) is None, header
    assert bearer_token("Bearer " + "x" * 512, 512) == "x" * 512
    assert bearer_token("Bearer " + "x" * 513, 512) is None
    assert bearer_token("Bearer " + "x" * 100_000) == "x" * 100_000  # unbounded: the edge bounds it itself


@given(st.text(max_size=300), st.one_of(st.none(), st.integers(0, 64)))
def test_bearer_token_never_raises_and_honours_the_bound(header: str, max_len: int | None) -> None:
    token = bearer_token(header, max_len)
    if token is not None:
        assert token and token == token.strip() and token in header
        assert header.strip().lower().startswith("bearer ")
        assert max_len is None or len(token) <= max_len


def test_client_ip_from_the_asgi_scope() -> None:
    assert client_ip({"client": ("192.0.2.7", 51000)}) == "192.0.2.7"
    assert client_ip({"client": None}) == ""
    assert client_ip({}) == ""
