"""Fill a DataTable with columns as wide as what they hold, at once.

Textual's DataTable measures auto-width columns only when its message queue runs
dry, so a table filled and drawn in one go (a screen that opens with data, a slow
machine) showed every column cut to its header's width until the next idle moment,
and rows and header could disagree after the cursor moved. Giving each column its
width as the rows go in makes the first frame right.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text


def fill(table: DataTable[Cell], headers: Sequence[str], rows: Sequence[Sequence[Cell]],
         keys: Sequence[Hashable], *, widest: int = 40) -> None:
    """Replace the table's columns and rows; each column gets the width of its widest
    cell or header, up to `widest` cells (longer text is cut by the table)."""
    widths = [cell_len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            plain = cell.plain if isinstance(cell, Text) else cell
            widths[i] = max(widths[i], min(widest, max(
                (cell_len(line) for line in plain.splitlines()), default=0)))
    table.clear(columns=True)
    for header, width in zip(headers, widths, strict=True):
        table.add_column(header, width=width, key=header or None)
    for row, key in zip(rows, keys, strict=True):
        table.add_row(*row, key=None if key is None else str(key))
