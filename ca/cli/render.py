"""Terminal tables that never cut what identifies a row.

A responder reads serials and identities off ``ikepki revoke``'s dry run and pastes them into the
next command: rich's default table squeezes every column and ellipsises (``23719892a…``) when the
terminal is narrower than the table. Here the *key* columns (serial, identity, …) always print in
full: when they fit next to the other columns, as a table whose other columns wrap; otherwise as
a list, one ``name: value`` line per field and a blank line between rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

MAX_WORD = 20  # a wrapped column keeps words up to this long whole; longer ones fold
CELL_OVERHEAD = 3  # rich's default box: one border + one space each side per column


@dataclass(frozen=True)
class Column:
    name: str
    key: bool = False  # identifying: printed whole, never wrapped or ellipsised


def _min_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    """Key columns: their longest cell; others: their longest word (capped), so they wrap between words."""
    out = []
    for i, col in enumerate(columns):
        cells = [col.name, *(r[i] for r in rows)]
        if col.key:
            out.append(max(len(c) for c in cells))
        else:
            out.append(min(MAX_WORD, max(len(w) for c in cells for w in [*c.split(), ""])))
    return out


def render(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]],
           title: str | None = None) -> None:
    """Print ``rows`` (one string per column) as a table or, when the key columns would not fit
    whole in ``console.width``, as a list."""
    widths = _min_widths(columns, rows)
    if 1 + sum(CELL_OVERHEAD + w for w in widths) <= console.width:  # + the right-hand border
        table = Table(title=title)
        for col, width in zip(columns, widths, strict=True):
            table.add_column(col.name, no_wrap=col.key, min_width=width)
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
        return
    if title:
        console.print(Text(title, style="italic"), soft_wrap=True)
    label = max((len(c.name) for c in columns), default=0)
    for n, row in enumerate(rows):
        if n:
            console.print()
        for col, cell in zip(columns, row, strict=True):
            # soft_wrap: the terminal wraps a long value; rich inserts no line breaks into it
            console.print(Text(f"{col.name + ':':<{label + 1}} ") + Text(cell), soft_wrap=True)
