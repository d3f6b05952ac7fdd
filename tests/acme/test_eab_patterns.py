"""EAB identifier patterns (enrollment/acme/messages.py): the forms that exist, what ``*`` means,
and that everything else is refused with a message listing the forms."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import PKIError
from enrollment.acme.cli import IDENTIFIERS_HELP, parse_patterns
from enrollment.acme.messages import PATTERN_FORMS, matches_pattern, parse_pattern
from enrollment.acme.model import Identifier

DEVICE = Identifier("permanent-identifier", "0123abcd/1.3.6.1.4.1.32473.1")


def test_star_means_everything_devices_included() -> None:
    for ident in (Identifier("dns", "h1.example.test"), Identifier("ip", "10.1.2.3"), Identifier("ip", "2001:db8::1"),
                  DEVICE, Identifier("hardware-module", "abcd/2.23.133.1.2")):
        assert matches_pattern(ident, parse_pattern("*")), ident


@pytest.mark.parametrize(("pattern", "ident", "allowed"), [
    ("*.example.test", Identifier("dns", "h1.example.test"), True),
    ("*.example.test", Identifier("dns", "example.test"), False),
    ("*.example.test", DEVICE, False),
    ("h1.example.test", Identifier("dns", "h1.example.test"), True),
    ("10.0.0.0/8", Identifier("ip", "10.9.9.9"), True),
    ("10.0.0.0/8", Identifier("ip", "11.0.0.1"), False),
    ("10.1.2.3", Identifier("ip", "10.1.2.3"), True),
    ("device:*", DEVICE, True),
    ("device:*", Identifier("dns", "h1.example.test"), False),
    (DEVICE.value, DEVICE, True),
])
def test_forms(pattern: str, ident: Identifier, allowed: bool) -> None:
    assert matches_pattern(ident, parse_pattern(pattern)) is allowed


@pytest.mark.parametrize("bad", ["laptop-*.corp.test", "*corp.test", "*.", "*.*.test", "device:foo", "a b",
                                 "10.0.0.0/33", "x" * 300, "", "**"])
def test_refused_with_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="device:") as exc:
        parse_pattern(bad)
    assert "'*.example.test'" in str(exc.value)
    with pytest.raises(PKIError) as cli_exc:
        parse_patterns(bad or ",")
    assert "device:*" in cli_exc.value.detail


def test_help_names_every_form() -> None:
    for form in ("'*'", "*.example.test", "CIDR", "device:*"):
        assert form in IDENTIFIERS_HELP and form in PATTERN_FORMS


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_pattern_never_crashes(text: str) -> None:
    try:
        p = parse_pattern(text)
    except ValueError as exc:
        assert "'*.example.test'" in str(exc) or "device:*" in str(exc)
        return
    assert p == p.strip().lower() and 0 < len(p) <= 255
    for ident in (Identifier("dns", "h.example.test"), Identifier("ip", "10.0.0.1"), DEVICE):
        assert isinstance(matches_pattern(ident, p), bool)


def test_cli_refuses_a_label_wildcard_and_shows_what_a_key_allows(deployment_dir: Path) -> None:
    from tests.conftest import run_ikepki

    bad = run_ikepki("acme", "eab", "create", "--profile", "machine", "--identifiers", "laptop-*.corp.test",
                     directory=deployment_dir, check=False)
    assert bad.returncode == 5 and "device:*" in bad.stderr and "'*.example.test'" in bad.stderr, bad.stderr
    ok = run_ikepki("acme", "eab", "create", "--profile", "machine", "--identifiers", "*", directory=deployment_dir)
    assert "allows:   *" in ok.stdout.splitlines() and "profile:  machine" in ok.stdout.splitlines()
