"""ca/cli/render.py: identifying columns are printed whole at any terminal width."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from ca.cli.render import Column, render

COLUMNS = (Column("serial", key=True), Column("identity", key=True), Column("device"), Column("profile"),
           Column("status"), Column("expires"), Column("live SAs on"))
ROW = ["23719892a4b6c8d0e1f2a3b4c5d6e7f8091a2b3c", "DNS:laptop-17.corp.example.test, IP:10.1.2.3", "-", "machine",
       "valid", "2026-12-07 20:10Z", "gw1, gw2"]


def rendered(width: int, rows: list[list[str]], columns: tuple[Column, ...] = COLUMNS) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    render(console, columns, rows, "would revoke")
    return console.export_text()


def test_wide_terminal_gets_a_table() -> None:
    out = rendered(200, [ROW])
    assert "┃ serial" in out and ROW[0] in out and ROW[1] in out


def test_80_and_60_columns_switch_to_a_list_with_whole_values() -> None:
    for width in (80, 60):
        lines = rendered(width, [ROW, ROW]).splitlines()
        assert f"serial:      {ROW[0]}" in lines and f"identity:    {ROW[1]}" in lines
        assert "┃" not in "".join(lines) and "…" not in "".join(lines)


def test_narrow_table_wraps_other_columns_but_not_key_columns() -> None:
    rows = [["a1b2c3", "DNS:h.example.test", "x", "machine", "valid", "2026-12-07 20:10Z", "a long list of gws"]]
    out = rendered(80, rows)
    assert "┃ serial" in out  # it fits as a table: the keys in full, the long cell wrapped between words
    assert "a1b2c3" in out and "DNS:h.example.test" in out and "a long list of gws" not in out


cell = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(20, 220), rows=st.lists(st.tuples(cell, cell, cell, cell), min_size=1, max_size=4))
def test_key_cells_always_appear_whole(width: int, rows: list[tuple[str, str, str, str]]) -> None:
    columns = (Column("serial", key=True), Column("a"), Column("identity", key=True), Column("b"))
    out = rendered(width, [list(r) for r in rows], columns)
    # a list line may be wider than the console (the terminal soft-wraps it); a table cell never is split
    for r in rows:
        assert r[0] in out and r[2] in out


def test_error_lines_print_brackets_literally(capsys: object) -> None:
    """Error details are data: a TLS error's "[SSL: …]" or a stray "[/x]" is printed as is (rich
    markup would swallow the first and crash on the second)."""
    from ca.cli.common import fail

    message = "https://gw:8444: [SSL: CERTIFICATE_VERIFY_FAILED] [ssl] certificate verify failed [/x]"
    exit_ = fail(message, 5)
    assert exit_.exit_code == 5
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert message in err.replace("\n", "")
