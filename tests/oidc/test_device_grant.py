"""The RFC 8628 client's polling rules (§3.4-3.5), on a scripted token endpoint (pure logic: the
real provider is exercised by test_enroll.py)."""

from __future__ import annotations

import httpx
import pytest

from ca.errors import PKIError
from enrollment.oidc import device_grant


def scripted(answers: list[tuple[int, dict[str, str]]], seen: list[dict[str, str]]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(httpx.QueryParams(request.content.decode())))
        status, body = answers.pop(0)
        return httpx.Response(status, json=body)

    return httpx.Client(transport=httpx.MockTransport(handler))


CODE = device_grant.DeviceCode("dc", "ABCD-EFGH", "https://idp/device", None, 600, 5)


def test_interval_and_slow_down() -> None:
    sleeps: list[float] = []
    seen: list[dict[str, str]] = []
    pending = (400, {"error": "authorization_pending"})
    client = scripted([pending, (400, {"error": "slow_down"}), pending, (400, {"error": "slow_down"}),
                       (200, {"id_token": "t"})], seen)
    out = device_grant.poll(client, "https://idp/token", "cli", CODE, sleep=sleeps.append)
    assert out == {"id_token": "t"}
    assert sleeps == [5, 5, 10, 10, 15]  # slow_down: +5 s for this and every later request
    assert seen[0] == {"grant_type": device_grant.GRANT, "device_code": "dc", "client_id": "cli"}


@pytest.mark.parametrize(("error", "match"), [("access_denied", "denied"), ("expired_token", "expired"),
                                              ("invalid_grant", "invalid_grant")])
def test_terminal_errors(error: str, match: str) -> None:
    client = scripted([(400, {"error": error})], [])
    with pytest.raises(PKIError, match=match):
        device_grant.poll(client, "https://idp/token", "cli", CODE, sleep=lambda _s: None)


def test_gives_up_when_the_code_expires() -> None:
    clock = iter(range(0, 10_000, 100))
    client = scripted([(400, {"error": "authorization_pending"})] * 20, [])
    with pytest.raises(PKIError, match="expired"):
        device_grant.poll(client, "https://idp/token", "cli", CODE, sleep=lambda _s: None,
                          monotonic=lambda: float(next(clock)))
