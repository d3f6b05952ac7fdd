"""The three inbound formats with their documented payloads: Alertmanager webhook v4 (as 0.25
sent it here, incl. the zero ``endsAt``), Keylime's ``{msg, signature}`` signed as keylime/crypto.py
signs, and Standard Webhooks signed by the reference library (PyPI ``standardwebhooks``)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from standardwebhooks.webhooks import Webhook

from response.alerts import AlertStatus, flatten
from response.errors import HookRefused, Refusal
from response.formats import alertmanager, generic, keylime

# what Alertmanager 0.25 posted in a trial here (notes: zero-trust-peers.md)
AM_FIRING = {
    "receiver": "ikepki", "status": "firing",
    "alerts": [{"status": "firing", "labels": {"alertname": "EDRDeviceCompromised", "device": "laptop-7",
                                                "severity": "critical"},
                "annotations": {}, "startsAt": "2026-12-06T19:00:01.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "4c0e5a4f5c1d2e3f"}],
    "groupLabels": {"device": "laptop-7"}, "commonLabels": {"alertname": "EDRDeviceCompromised"},
    "commonAnnotations": {}, "externalURL": "http://am:9093", "version": "4",
    "groupKey": "{}:{device=\"laptop-7\"}", "truncatedAlerts": 0}


def test_alertmanager_firing_with_zero_ends_at() -> None:
    [alert] = alertmanager.parse("am", json.dumps(AM_FIRING).encode())
    assert alert.status is AlertStatus.firing and alert.fingerprint == "4c0e5a4f5c1d2e3f"
    assert alert.fields["labels.device"] == "laptop-7" and alert.fields["labels.alertname"] == "EDRDeviceCompromised"
    assert alert.ends_at is None
    assert alert.starts_at is not None and alert.starts_at.tzinfo is not None


def test_alertmanager_resolved() -> None:
    body = json.loads(json.dumps(AM_FIRING))
    body["status"] = body["alerts"][0]["status"] = "resolved"
    body["alerts"][0]["endsAt"] = "2026-12-06T19:05:00Z"
    [alert] = alertmanager.parse("am", json.dumps(body).encode())
    assert alert.status is AlertStatus.resolved and alert.ends_at == datetime(2026, 12, 6, 19, 5, tzinfo=UTC)


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(version="3"),
    lambda b: b.update(alerts="x"),
    lambda b: b["alerts"][0].pop("fingerprint"),
    lambda b: b["alerts"][0].update(status="pending"),
    lambda b: b["alerts"][0].update(labels=[]),
    lambda b: b.update(alerts=[1]),
])
def test_alertmanager_malformed(mutate) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(json.dumps(AM_FIRING))
    mutate(body)
    with pytest.raises(HookRefused) as err:
        alertmanager.parse("am", json.dumps(body).encode())
    assert err.value.refusal is Refusal.MALFORMED


def test_alertmanager_not_json() -> None:
    with pytest.raises(HookRefused) as err:
        alertmanager.parse("am", b"\xff{")
    assert err.value.refusal is Refusal.MALFORMED


# -- Keylime ------------------------------------------------------------------------------------

def keylime_event(agent: str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000") -> str:
    """The revocation notifier's message (keylime/cloud_verifier_common.py prepare_error)."""
    return json.dumps({"type": "revocation", "ip": "127.0.0.1", "agent_id": agent, "port": 9002,
                       "tpm_policy": "{\"mask\": \"0x0\"}", "meta_data": "{\"cert_serial\": \"abc\", "
                       "\"device\": \"laptop-7\"}", "event_time": "Sun Dec  6 19:00:00 2026",
                       "event_id": "pcr_validation_failed", "severity_label": "emergency",
                       "context": "{\"pcr\": 7}"})


def keylime_sign(key: rsa.RSAPrivateKey, msg: str) -> str:
    """keylime/crypto.py rsa_sign: RSA-PSS, SHA-256, MGF1-SHA-256, maximum salt, base64."""
    sig = key.sign(msg.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
                   hashes.SHA256())
    return base64.b64encode(sig).decode()


@pytest.fixture(scope="module")
def kl_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def test_keylime_signed_message(kl_key: rsa.RSAPrivateKey) -> None:
    msg = keylime_event()
    body = json.dumps({"msg": msg, "signature": keylime_sign(kl_key, msg)}).encode()
    [alert] = keylime.parse("kl", body, kl_key.public_key(), allow_unsigned=False)
    assert alert.fields["agent_id"] == "d432fbb3-d2f1-4a97-9ef7-75bd81c00000"
    assert alert.fields["meta_data.device"] == "laptop-7" and alert.fields["severity_label"] == "emergency"
    assert alert.status is AlertStatus.firing


def test_keylime_verifier_key_from_certificate_or_public_key(kl_key: rsa.RSAPrivateKey) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Keylime Revocation")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(kl_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(kl_key, hashes.SHA256()))
    pub = kl_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for pem in (cert.public_bytes(serialization.Encoding.PEM), pub):
        assert keylime.load_verifier_key(pem).public_numbers() == kl_key.public_key().public_numbers()
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError):
        keylime.load_verifier_key(ec_pub)


@pytest.mark.parametrize("case", ["tampered", "none", "empty", "other-key", "not-base64", "missing"])
def test_keylime_bad_signatures(kl_key: rsa.RSAPrivateKey, case: str) -> None:
    msg = keylime_event()
    sig: str | None = keylime_sign(kl_key, msg)
    if case == "tampered":
        msg = keylime_event("someone-else")
    elif case == "none":
        sig = "none"
    elif case == "empty":  # Keylime 7 sends "" when the agent has no revocation key
        sig = ""
    elif case == "other-key":
        sig = keylime_sign(rsa.generate_private_key(65537, 2048), msg)
    elif case == "not-base64":
        sig = "!!!"
    else:
        sig = None
    body = json.dumps({"msg": msg, "signature": sig} if sig is not None else {"msg": msg}).encode()
    with pytest.raises(HookRefused) as err:
        keylime.parse("kl", body, kl_key.public_key(), allow_unsigned=False)
    assert err.value.refusal is Refusal.BAD_SIGNATURE


def test_keylime_unsigned_needs_explicit_permission() -> None:
    body = json.dumps({"msg": keylime_event(), "signature": "none"}).encode()
    with pytest.raises(HookRefused) as err:
        keylime.parse("kl", body, None, allow_unsigned=False)
    assert err.value.refusal is Refusal.UNAUTHENTICATED
    assert keylime.parse("kl", body, None, allow_unsigned=True)[0].fields["event_id"] == "pcr_validation_failed"


# -- Standard Webhooks --------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def signed_headers(body: bytes, msg_id: str = "msg_1", at: datetime | None = None, secret: str = SECRET
                   ) -> dict[str, str]:
    at = at or datetime.now(UTC)
    sig = Webhook(secret).sign(msg_id, at, body)  # the reference implementation signs
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": sig}


def test_generic_reference_signature_verifies_and_ours_matches_theirs() -> None:
    body = b'{"status":"firing","device":"laptop-7","fingerprint":"edr-42"}'
    now = datetime.now(UTC)
    headers = signed_headers(body, at=now)
    key = generic.decode_secret(SECRET)
    signed = generic.verify(headers, body, [key], now, 300)
    assert generic.sign(key, "msg_1", signed.timestamp, body) == headers["webhook-signature"]
    Webhook(SECRET).verify(body, {**headers, "webhook-signature": generic.sign(key, "msg_1", signed.timestamp,
                                                                                body)})
    [alert] = generic.parse("soar", body, signed, "fingerprint")
    assert alert.fingerprint == "edr-42" and alert.fields["device"] == "laptop-7"


def test_generic_several_signatures_and_rotated_keys() -> None:
    body = b'{"device":"x"}'
    now = datetime.now(UTC)
    old = "whsec_" + base64.b64encode(b"o" * 24).decode()
    headers = signed_headers(body, at=now, secret=old)
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    generic.verify(headers, body, [generic.decode_secret(SECRET), generic.decode_secret(old)], now, 300)


@pytest.mark.parametrize("case,refusal", [
    ("stale", Refusal.STALE_TIMESTAMP), ("future", Refusal.STALE_TIMESTAMP), ("tampered", Refusal.BAD_SIGNATURE),
    ("wrong-secret", Refusal.BAD_SIGNATURE), ("no-headers", Refusal.UNAUTHENTICATED),
    ("bad-timestamp", Refusal.MALFORMED), ("v2-only", Refusal.BAD_SIGNATURE)])
def test_generic_refusals(case: str, refusal: Refusal) -> None:
    body = b'{"device":"laptop-7"}'
    now = datetime.now(UTC)
    at = {"stale": now - timedelta(seconds=301), "future": now + timedelta(seconds=301)}.get(case, now)
    headers = signed_headers(body, at=at, secret=SECRET if case != "wrong-secret"
                             else "whsec_" + base64.b64encode(b"w" * 32).decode())
    if case == "tampered":
        body = b'{"device":"laptop-8"}'
    elif case == "no-headers":
        headers = {}
    elif case == "bad-timestamp":
        headers["webhook-timestamp"] = "12.5"
    elif case == "v2-only":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(HookRefused) as err:
        generic.verify(headers, body, [generic.decode_secret(SECRET)], now, 300)
    assert err.value.refusal is refusal


def test_generic_resolved_and_bad_status() -> None:
    signed = generic.Signed("msg_2", 0)
    [alert] = generic.parse("soar", b'{"status":"RESOLVED","fingerprint":"f"}', signed, "fingerprint")
    assert alert.status is AlertStatus.resolved
    assert generic.parse("soar", b'{"device":"d"}', signed, "fingerprint")[0].fingerprint == "msg_2"
    with pytest.raises(HookRefused):
        generic.parse("soar", b'{"status":"maybe"}', signed, "fingerprint")
    with pytest.raises(HookRefused):
        generic.parse("soar", b"[1]", signed, "fingerprint")


def test_secret_decoding() -> None:
    assert generic.decode_secret(SECRET) == b"k" * 32
    assert generic.decode_secret(SECRET.rstrip("=")) == b"k" * 32
    for bad in ("whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError):
            generic.decode_secret(bad)


def test_flatten_bounds() -> None:
    deep = {"a": {"b": {"c": {"d": {"e": "too deep"}}}}, "n": 1, "t": True, "l": [1, 2], "big": "x" * 5000}
    flat = flatten(deep)
    assert flat == {"n": "1", "t": "true"}
    assert len(flatten({f"k{i}": "v" for i in range(1000)})) == 256
