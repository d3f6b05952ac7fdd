"""Pure parts of the console: form parsing (fuzzed), the chart geometry, plan digests, the OIDC
sign-in rules (PKCE S256, roles from groups), and the server-side session and pending sign-in
stores on a real SQLite database migrated with the console's Alembic branch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import PKIError
from ca.model import CertificateInfo, CertStatus, UserIdentity
from ca.store import migrate
from ca.store.db import Database
from console.app import _safe_next, plan_digest
from console.charts import bar_chart, buckets
from console.forms import MAX_FIELDS, RevokeForm, parse_form, parse_serial_list
from console.oidc import code_challenge, console_role, person_name
from console.sessions import SqlLoginStore, SqlSessionStore
from console.settings import ConsoleOidcSettings

FORM = "application/x-www-form-urlencoded"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@given(st.binary(max_size=2048), st.sampled_from([FORM, "text/plain", None, FORM + "; charset=utf-8"]))
@settings(max_examples=300, deadline=None)
def test_parse_form_accepts_or_refuses_cleanly(body: bytes, ctype: str | None) -> None:
    try:
        out = parse_form(body, ctype)
    except PKIError:
        return
    assert len(out) <= MAX_FIELDS
    assert all(isinstance(k, str) and isinstance(v, str) and "\x00" not in v for k, v in out.items())


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=50), max_size=20))
@settings(max_examples=200, deadline=None)
def test_parse_form_round_trips_what_a_browser_sends(fields: dict[str, str]) -> None:
    from urllib.parse import urlencode

    fields = {k: v for k, v in fields.items() if "\x00" not in v}
    assert parse_form(urlencode(fields).encode(), FORM) == fields


def test_parse_form_bounds() -> None:
    with pytest.raises(PKIError, match="too long"):
        parse_form(b"reason=" + b"a" * 600, FORM)
    assert parse_form(b"serials=" + b"a" * 10_000, FORM)["serials"] == "a" * 10_000
    with pytest.raises(PKIError):
        parse_form(b"&".join(b"f%d=1" % i for i in range(MAX_FIELDS + 1)), FORM)
    with pytest.raises(PKIError, match="HTML form"):
        parse_form(b"a=1", "multipart/form-data; boundary=x")
    with pytest.raises(PKIError):
        parse_form("a=\u00e9".encode(), FORM)  # raw non-ASCII: a browser percent-encodes it


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_serial_list_parses_or_refuses(text: str) -> None:
    try:
        serials = parse_serial_list(text)
    except PKIError:
        return
    assert len(set(serials)) == len(serials) and all(0 < s < 2 ** 160 for s in serials)


def test_revoke_form_selectors_and_echo() -> None:
    form = RevokeForm.parse({"serials": "0x0a, 0b\n0A", "identity": " alice@example.test ", "action": "hold",
                             "reason": "keyCompromise", "block_device": "on"})
    assert form.selector.serials == (10, 11) and form.selector.identity == "alice@example.test"
    assert form.hold and form.reason is None and form.block_device
    assert RevokeForm.parse(form.echo()) == form
    with pytest.raises(PKIError):
        RevokeForm.parse({"action": "delete"})
    by_user = RevokeForm.parse({"user": " http://idp.test#bob ", "action": "revoke", "reason": "privilegeWithdrawn"})
    assert by_user.selector.user == "http://idp.test#bob" and by_user.echo()["user"] == "http://idp.test#bob"
    assert RevokeForm.parse(by_user.echo()) == by_user


def _info(serial: int, status: CertStatus) -> CertificateInfo:
    return CertificateInfo(serial, "ec", "CN=x", (), "user", T0, T0, status, b"")


def test_plan_digest_changes_with_selection_state_and_action() -> None:
    form = RevokeForm.parse({"serials": "a", "action": "revoke", "reason": "keyCompromise"})
    base = plan_digest([_info(10, CertStatus.valid)], form)
    assert base == plan_digest([_info(10, CertStatus.valid)], form)
    assert base != plan_digest([_info(10, CertStatus.hold)], form)
    assert base != plan_digest([_info(10, CertStatus.valid), _info(11, CertStatus.valid)], form)
    assert base != plan_digest([_info(10, CertStatus.valid)], RevokeForm.parse({"serials": "a", "action": "hold"}))


def test_buckets_and_chart_geometry() -> None:
    times = [T0 + timedelta(minutes=m) for m in (0, 59, 60, 61, 300)] + [T0 - timedelta(seconds=1)]
    assert buckets(times, T0, timedelta(hours=1), 3) == [2, 2, 0]
    chart = bar_chart(["a", "b", "c"], [("issued", [0, 5, 10]), ("revoked", [1, 0, 0])], width=300, height=120)
    assert chart.maximum == 10 and chart.total == 16 and len(chart.bars) == 6
    tallest = max(chart.bars, key=lambda b: b.height)
    assert tallest.value == 10 and tallest.height == 120 - 8 - 20 and tallest.y == 8
    assert next(b for b in chart.bars if b.series == "revoked" and b.label == "a").height >= 1  # 1 of 10 stays visible
    assert all(b.x + b.width <= 300 for b in chart.bars)
    assert bar_chart([], []).bars == []


@pytest.mark.parametrize("value, ok", [("/console/certificates?x=1", True), ("//evil.test/console/", False),
                                       ("https://evil.test/console/", False), ("/console\\..", False),
                                       ("/admin/v1/", False), ("/console/\nx", False)])
def test_next_stays_inside_the_console(value: str, ok: bool) -> None:
    assert bool(_safe_next(value)) is ok


def test_sessions_idle_timeout_absolute_lifetime_and_sign_out(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    migrate.upgrade(url)
    db = Database(url)
    try:
        store = SqlSessionStore(db, idle=timedelta(minutes=15), max_age=timedelta(hours=1))
        cookie, s = store.create("alice", "revoker", "token", "127.0.0.1", T0)
        assert len(cookie) >= 43 and len(s.csrf) >= 43
        with db.read() as conn:  # only the cookie's hash is stored
            stored = conn.exec_driver_sql("SELECT id_sha256 FROM console_sessions").scalar_one()
        assert cookie not in stored and len(stored) == 64
        assert store.get(cookie, T0 + timedelta(minutes=14)) is not None  # activity: idle timer restarts
        assert store.get(cookie, T0 + timedelta(minutes=28)) is not None
        assert store.get(cookie + "x", T0) is None and store.get("", T0) is None and store.get("a" * 500, T0) is None
        assert store.get(cookie, T0 + timedelta(minutes=44)) is None  # idle 16 min
        assert store.get(cookie, T0 + timedelta(minutes=45)) is None  # and gone for good

        cookie, _ = store.create("bob", "viewer", "token", "", T0)
        for minute in range(10, 60, 10):
            assert store.get(cookie, T0 + timedelta(minutes=minute)) is not None
        assert store.get(cookie, T0 + timedelta(minutes=61)) is None  # absolute lifetime

        # an identity-provider session may be shorter (console.oidc.session_max_seconds), never longer
        short, _ = store.create("oidc:https://idp#dora", "admin", "oidc", "", T0, timedelta(minutes=20))
        longer, _ = store.create("oidc:https://idp#eve", "admin", "oidc", "", T0, timedelta(hours=3))
        assert store.get(short, T0 + timedelta(minutes=10)) is not None
        assert store.get(short, T0 + timedelta(minutes=21)) is None
        for minute in range(10, 60, 10):
            assert store.get(longer, T0 + timedelta(minutes=minute)) is not None
        assert store.get(longer, T0 + timedelta(minutes=61)) is None

        cookie, _ = store.create("carol", "viewer", "token", "", T0)
        other = SqlSessionStore(Database(url), timedelta(minutes=15), timedelta(hours=1))  # another replica
        assert other.get(cookie, T0 + timedelta(minutes=1)) is not None
        store.delete(cookie)
        assert other.get(cookie, T0 + timedelta(minutes=1)) is None
    finally:
        db.dispose()


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_console_role_is_the_highest_mapped_group() -> None:
    roles = {"pki-admins": "admin", "secops": "revoker", "helpdesk": "viewer"}
    assert console_role(roles, ["everyone"]) is None and console_role(roles, []) is None
    assert console_role(roles, ["helpdesk", "secops"]) == "revoker"
    assert console_role(roles, ["pki-admins", "helpdesk"]) == "admin"
    assert console_role(roles, ["PKI-ADMINS"]) is None  # group names are compared exactly
    with pytest.raises(ValueError):
        ConsoleOidcSettings(provider="corp", client_id="c", group_roles={"g": "root"})
    with pytest.raises(ValueError):
        ConsoleOidcSettings(provider="corp", client_id="c", group_roles={"g": "admin"},
                            redirect_uri="http://pki.test/console/oidc/callback")


def test_person_name_is_the_enrollment_identity_uri() -> None:
    u = UserIdentity("https://idp.test/tenant", "a b#c", email="a@x.test")
    assert person_name(u) == "oidc:https://idp.test/tenant#a%20b%23c"
    assert person_name(UserIdentity("https://idp.test", "x" * 250)) is None  # longer than an actor


def test_pending_sign_ins_are_bound_to_their_cookie_used_once_and_expire(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    migrate.upgrade(url)
    db = Database(url)
    try:
        store = SqlLoginStore(db, timedelta(minutes=10))
        cookie, login = store.begin("corp", "/console/audit", T0)
        assert len({login.state, login.nonce, login.code_verifier, cookie}) == 4
        assert 43 <= len(login.code_verifier) <= 128  # RFC 7636 §4.1
        with db.read() as conn:
            stored = conn.exec_driver_sql("SELECT id_sha256 FROM console_logins").scalar_one()
        assert cookie not in stored and len(stored) == 64
        for wrong in (cookie + "x", None, "", "a" * 500):
            assert store.take(wrong, T0) is None
        other = SqlLoginStore(Database(url), timedelta(minutes=10))  # another replica finishes it
        assert other.take(cookie, T0 + timedelta(minutes=1)) == login
        assert store.take(cookie, T0 + timedelta(minutes=1)) is None  # once
        late, _ = store.begin("corp", "", T0)
        assert store.take(late, T0 + timedelta(minutes=10)) is None  # expired
    finally:
        db.dispose()
