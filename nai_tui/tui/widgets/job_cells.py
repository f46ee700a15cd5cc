"""What a row of the jobs table shows and how it is drawn: each job's cells (text and
style per column), the order of the rows by a chosen column, the header, and one row
drawn as DataTable draws it. Functions of their inputs; `JobTable` holds the state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from nai_server.protocol import JobInfo
from nai_tui.tui.widgets import format as fmt
from nai_tui.tui.widgets.columns import COLUMNS, PADDING

RIGHT = frozenset({0})  # right-justified columns (the id)
HEADER = tuple((label, "") for _, label, _ in COLUMNS)
STATE_CELLS = {state: (state.replace("_", " "), style)
               for state, style in fmt.STATE_STYLE.items()}
STATE_ORDER = {state: i for i, state in enumerate(fmt.ALL_STATES)}

Cell = tuple[str, str]  # (text, Rich style)
Cells = tuple[Cell, ...]
LineKey = tuple[Cells, int, bool, bool, bool]  # cells, odd row, cursor, hovered, marked


def job_cells(job: JobInfo, now: float, w: tuple[int, ...]) -> Cells:
    """What the row of a job shows at column widths `w`: (text, style) per column."""
    note = fmt.note(job)
    return ((str(job.id), ""), (fmt.clip(job.name, w[1]), ""),
            (fmt.clip(job.user, w[2]), ""), STATE_CELLS.get(job.state) or (job.state, ""),
            (fmt.clip(fmt.gpus_text(job), w[4]), ""), (fmt.runtime(job, now), ""),
            (fmt.age(job, now), ""),
            (fmt.fit_note(note, w[7]), "italic" if job.reason else "dim") if note else ("", ""))


def sort_key(column: int | None, now: float) -> Callable[[JobInfo], Any]:
    """The order of the rows: the sensible one (None), or by the column's values."""
    if column is None:
        return fmt.sort_key
    key = COLUMNS[column][0]
    by: dict[str, Callable[[JobInfo], Any]] = {
        "id": lambda j: j.id, "name": lambda j: (j.name.lower(), j.id),
        "user": lambda j: (j.user, j.id),
        "state": lambda j: (STATE_ORDER.get(j.state, 99), j.id),
        "gpus": lambda j: (int(j.spec.get("gpus") or len(j.gpus)), j.id),
        "time": lambda j: ((j.ended_at or now) - j.started_at
                           if j.started_at is not None else -1.0, j.id),
        "age": lambda j: (-j.submitted_at, j.id), "note": lambda j: (fmt.note(j), j.id)}
    return by[key]


def header(column: int | None, reverse: bool) -> Cells:
    """The column labels, the sorted one marked with its direction."""
    if column is None:
        return HEADER
    arrow = "▼" if reverse else "▲"
    return tuple((f"{label}{arrow}" if i == column else label, "")
                 for i, (label, _) in enumerate(HEADER))


def draw_row(cells: Cells, widths: tuple[int, ...], width: int, row_style: Style,
             over: Style, *, header: bool = False, cursor: bool = False,
             marked: bool = False) -> Strip:
    """One row as DataTable draws it: padded cells over the row's style, `over` (the
    cursor's and the hover's) over that, and the row's style carried on to the right
    edge (`width`)."""
    base = row_style + over
    post = Style.from_color(color=over.color) if cursor else Style()
    pad = Segment(" ", base + post)
    segments: list[Segment] = []
    for index, ((text, style), cell_width) in enumerate(zip(cells, widths, strict=True)):
        text = set_cell_size(text, cell_width) if cell_len(text) > cell_width else text
        space = " " * (cell_width - cell_len(text))
        styled = base + Style.parse(style) + post if style else base + post
        cell = [Segment(text, styled), Segment(space, base + post)]
        first = Segment("●", base + Style(color="magenta", bold=True)) \
            if marked and index == 0 else pad
        segments += [first, *(reversed(cell) if index in RIGHT and not header else cell), pad]
    total = sum(widths) + PADDING
    segments.append(Segment(" " * max(0, width - total), base))
    return Strip([segment for segment in segments if segment.text]).simplify()
