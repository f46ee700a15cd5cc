"""`JobTable`: the queue as a table that draws only what is on screen.

A Line-API widget rather than a `DataTable`: `show(jobs, now)` only sorts the jobs and
keeps them; a row's cells are worked out when the row is painted, and a refresh
repaints only the lines on screen whose text changed. With 1,000 jobs a refresh costs
a sort and a few dozen short lines, where a DataTable re-measured and re-rendered its
cells through Rich. The cursor stays on the same job however the order moves, so a
refresh every two seconds neither flickers nor loses your place.

Columns have fixed widths computed from the table's width (names and notes are
clipped to fit). The look (header, zebra stripes, cursor, hover) follows DataTable's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip

from nai_server.protocol import JobInfo
from nai_tui.tui.widgets.columns import COLUMNS, PADDING, fit_columns, widths
from nai_tui.tui.widgets.job_cells import Cells, LineKey, draw_row, header, job_cells, sort_key
from nai_tui.tui.widgets.job_cursor import CursorTable

LINE_CACHE = 4000  # rendered lines kept; cleared whole when full


class JobTable(CursorTable, can_focus=True):
    """Jobs, one per row. Feed it with `show(jobs, now)`; Enter or a click on the
    cursor row posts `JobTable.Opened`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", tooltip="Open the job under the cursor"),
        Binding("up,k", "cursor_up", "Cursor up", show=False),
        Binding("down,j", "cursor_down", "Cursor down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("ctrl+u", "half_page(-1)", "Half a page up", show=False),
        Binding("ctrl+d", "half_page(1)", "Half a page down", show=False),
        Binding("home,ctrl+home,g", "first", "First job", show=False),
        Binding("end,ctrl+end,G", "last", "Last job", show=False),
        Binding("space", "toggle_mark", "Mark", show=False,
                tooltip="Mark the job (or unmark it) for a bulk cancel"),
        Binding("less_than_sign", "sort(-1)", "Sort ←", show=False,
                tooltip="Sort by the column to the left"),
        Binding("greater_than_sign", "sort(1)", "Sort →", show=False,
                tooltip="Sort by the column to the right"),
        Binding("exclamation_mark", "reverse", "Reverse", show=False,
                tooltip="Reverse the sort order"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "job-table--header", "job-table--cursor", "job-table--hover",
        "job-table--even-row", "job-table--odd-row",
    }
    # DataTable's look, under our own component names.
    DEFAULT_CSS = """
    JobTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .job-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .job-table--header {
                background-tint: $foreground 5%;
            }
        }
        &:dark > .job-table--even-row {
            background: $surface-darken-1 40%;
        }
        & > .job-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .job-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .job-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .job-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .job-table--hover {
            background: $block-hover-background;
        }
    }
    """

    class Opened(Message):
        """The user opened a job: Enter, or a click on the cursor row."""

        def __init__(self, table: JobTable, job: JobInfo) -> None:
            super().__init__()
            self.table = table
            self.job = job

        @property
        def control(self) -> JobTable:
            return self.table

    class CursorMoved(Message):
        """The cursor moved to another row (or the rows changed under it)."""

        def __init__(self, table: JobTable, row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row

        @property
        def control(self) -> JobTable:
            return self.table

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.jobs: dict[int, JobInfo] = {}  # in the order shown
        self._order: list[int] = []
        self._index: dict[int, int] = {}
        self._max_id = 0
        self._now = 0.0
        self._widths: tuple[int, ...] = ()
        self._widths_for: tuple[object, ...] = ()
        self._fit: dict[str, int] = {}  # columns narrowed to what they show
        self._lines: dict[tuple[object, ...], Strip] = {}
        # What each line on screen shows as of the last show(), and where it scrolled.
        self._shown: dict[int, LineKey | None] = {}
        self._shown_at: tuple[int, Size] | None = None
        self._pseudo: object = None
        self._base = Style()
        self.sort_column: int | None = None  # None: the sensible order (fmt.sort_key)
        self.sort_reversed = False
        self.empty_text = "no jobs"

    # --- reading ------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def order(self) -> list[int]:
        """The ids of the jobs shown, top to bottom."""
        return list(self._order)

    def row_text(self, job_id: int) -> list[str]:
        """What the job's row shows, cell by cell (its row must be shown)."""
        return [text for text, _ in self.cells(self.jobs[job_id], self._now)]

    # --- columns and cells --------------------------------------------------------------

    def widths(self, max_id: int) -> tuple[int, ...]:
        """Column widths for the current size (see `columns.widths`)."""
        return widths(self.size.width or 80, max_id, self._fit)

    @property
    def note_width(self) -> int:
        return self._current_widths()[-1]

    def _current_widths(self) -> tuple[int, ...]:
        width = self.size.width
        if self._widths_for != (width, self._max_id, self._fit):
            self._widths_for = (width, self._max_id, self._fit)
            self._widths = self.widths(self._max_id)
        return self._widths

    def cells(self, job: JobInfo, now: float) -> Cells:
        """What the row of a job shows: (text, style) per column."""
        return job_cells(job, now, self._current_widths())

    # --- updating -----------------------------------------------------------------------

    def sort_key(self) -> Callable[[JobInfo], Any]:
        """The order of the rows: the sensible one, or by the chosen column."""
        return sort_key(self.sort_column, self._now)

    def show(self, jobs: Sequence[JobInfo], now: float) -> None:
        """Make the table show exactly these jobs, in their order (sensible, or by the
        chosen column). Repaints only the lines on screen that changed; the cursor
        follows its job."""
        keep = self.selected_job
        self._now = now
        ordered = sorted(jobs, key=self.sort_key(), reverse=self.sort_reversed)
        self.jobs = {job.id: job for job in ordered}
        self._order = [job.id for job in ordered]
        self._index = {job_id: i for i, job_id in enumerate(self._order)}
        self._max_id = max(self._order, default=0)
        self._fit = fit_columns(ordered) if ordered else {}
        if keep is not None and keep.id in self._index:
            self.cursor_row = self._index[keep.id]
        else:
            self.cursor_row = max(0, min(self.cursor_row, len(self._order) - 1))
        if self._hover is not None and self._hover >= len(self._order):
            self._hover = None
        self._refresh_changed(everything=self._size_to_fit())  # when rows came or went
        self.cursor_moved(self.cursor_row)

    def cursor_moved(self, row: int) -> None:
        self.post_message(self.CursorMoved(self, row))

    def opened(self, job: JobInfo) -> None:
        self.post_message(self.Opened(self, job))

    def _size_to_fit(self) -> bool:
        """Set the virtual size for the rows and the columns' widths; True if it changed."""
        size = Size(sum(self._current_widths()) + PADDING, len(self._order) + 1)
        if size == self.virtual_size:
            return False
        self.virtual_size = size
        return True

    def on_resize(self) -> None:
        self._size_to_fit()  # the name and note columns follow the width

    def _refresh_changed(self, *, everything: bool = False) -> None:
        """Refresh the lines on screen whose content changed since the last show()
        (all of them after a scroll or a resize: those repaint everything anyway)."""
        top = round(self.scroll_y)
        shown = {y: self._line_key(top + y - 1) for y in range(1, self.size.height)}
        if everything or self._shown_at != (top, self.size):
            self.refresh()
        else:
            for y, key in shown.items():
                if self._shown.get(y) != key:
                    self.refresh(Region(0, y, self.size.width, 1))
        self._shown, self._shown_at = shown, (top, self.size)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()
        self._shown_at = None
        self.refresh()

    # --- painting -----------------------------------------------------------------------

    def _line_key(self, row: int) -> LineKey | None:
        if row >= len(self._order):
            return None
        job = self.jobs[self._order[row]]
        return (self.cells(job, self._now), row % 2, row == self.cursor_row,
                row == self._hover, job.id in self.marked)

    def render_lines(self, crop: Region) -> list[Strip]:
        self._pseudo = self.get_pseudo_class_state()  # focus changes the cursor's colour
        self._base = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        if y == 0:
            header = self.header()
            line = self._line(header, lambda: self._render_row(header, "job-table--header",
                                                               header=True))
        else:
            key = self._line_key(scroll_y + y - 1)
            if key is None:
                if y == 1 and not self._order:
                    return Strip([Segment(f"  {self.empty_text}", self._base + Style(
                        italic=True, dim=True))]).crop_extend(0, width, self._base)
                return Strip.blank(width, self._base)
            cells, odd, cursor, hover, marked = key
            zebra = "job-table--odd-row" if odd else "job-table--even-row"
            line = self._line(key, lambda: self._render_row(cells, zebra, cursor=cursor,
                                                            hover=hover, marked=marked))
        return line.crop_extend(scroll_x, scroll_x + width, self._base)

    def header(self) -> Cells:
        """The column labels, the sorted one marked with its direction."""
        return header(self.sort_column, self.sort_reversed)

    def _line(self, key: object, render: Callable[[], Strip]) -> Strip:
        """A whole row from the cache, else rendered."""
        full = (key, self._current_widths(), self.size.width, self._pseudo)
        line = self._lines.get(full)
        if line is None:
            if len(self._lines) >= LINE_CACHE:
                self._lines.clear()
            line = self._lines[full] = render()
        return line

    def _render_row(self, cells: Cells, component: str, *, header: bool = False,
                    cursor: bool = False, hover: bool = False, marked: bool = False) -> Strip:
        """One row in the look of its component (header, even or odd row), with the
        hover's and the cursor's over it."""
        over = Style()
        if hover:
            over += self.get_component_rich_style("job-table--hover")
        if cursor:
            over += self.get_component_rich_style("job-table--cursor")
        return draw_row(cells, self._current_widths(), self.size.width,
                        self.get_component_rich_style(component), over, header=header,
                        cursor=cursor, marked=marked)

    # --- sorting ------------------------------------------------------------------------

    def action_sort(self, step: int) -> None:
        """Sort by the next column to the right (or left); past the last, the
        sensible order again."""
        at = -1 if self.sort_column is None else self.sort_column
        at += step
        self.sort_column = None if at < 0 or at >= len(COLUMNS) else at
        if at < -1:
            self.sort_column = len(COLUMNS) - 1
        self.show(list(self.jobs.values()), self._now)
        self.refresh()

    def action_reverse(self) -> None:
        """Reverse the order of the rows."""
        self.sort_reversed = not self.sort_reversed
        self.show(list(self.jobs.values()), self._now)
        self.refresh()
