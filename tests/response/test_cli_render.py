"""``ikepki incidents`` prints alert-derived text as text: rich markup in a rule name, target or
guard line neither crashes the CLI (``[/x]`` is a closing tag without opener) nor restyles the
output (``[red]x[/red]``). The backend is a stand-in returning stored incidents; the printing is
the real CLI's."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import response.cli as rcli

HOSTILE = "bad[/x]rule [red]x[/red]"


def _incident() -> dict[str, Any]:
    return {"id": 7, "created_at": "2026-12-06T20:00:00+00:00", "status": "pending", "source": "am",
            "rule": HOSTILE, "action": "hold", "target_kind": "device", "target_value": f"dev-{HOSTILE}",
            "serials": ["0a"], "changed": [], "guard": f"rule {HOSTILE}: 11 > 10"}


class _Backend:
    def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return [_incident()]

    def show(self, incident_id: int) -> dict[str, Any]:
        return _incident()

    def decide(self, incident_id: int, approve: bool, note: str | None) -> dict[str, Any]:
        return {**_incident(), "status": HOSTILE}


@pytest.mark.parametrize("args", [["list"], ["show", "7"], ["reject", "7"]])
def test_alert_text_is_printed_verbatim(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rcli, "_backend", lambda *a, **k: _Backend())
    monkeypatch.setattr(rcli.console, "width", 400)  # one table row: the hostile text stays on one line
    result = CliRunner().invoke(rcli.app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "[/x]" in result.output and "[red]x[/red]" in result.output
