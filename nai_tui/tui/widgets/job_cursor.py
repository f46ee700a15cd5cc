"""The jobs table's cursor, as k9s and vim users drive it: j/k, pages, half pages,
g/G, the mouse (hover, click, click again to open), and marks with Space.

`CursorTable` keeps the cursor's row, the hovered row and the marks over the rows
that `JobTable` orders (`_order`, `_index`, `jobs`); it tells the table when the
cursor moved or a job was opened (`cursor_moved`, `opened`)."""

from __future__ import annotations

from textual import events
from textual.geometry import Region, Spacing
from textual.scroll_view import ScrollView

from nai_server.protocol import JobInfo


class CursorTable(ScrollView):
    """A scroll view of job rows under a header line, with a cursor."""

    jobs: dict[int, JobInfo]  # in the order shown
    _order: list[int]
    _index: dict[int, int]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cursor_row = 0
        self._hover: int | None = None
        self.marked: set[int] = set()  # job ids marked with Space

    def cursor_moved(self, row: int) -> None:
        """Say that the cursor is on `row` now (or the rows changed under it)."""
        raise NotImplementedError

    def opened(self, job: JobInfo) -> None:
        """Say that the user opened `job`."""
        raise NotImplementedError

    @property
    def selected_job(self) -> JobInfo | None:
        """The job under the cursor, if any."""
        if not self._order:
            return None
        return self.jobs.get(self._order[min(self.cursor_row, len(self._order) - 1)])

    def move_cursor(self, row: int, *, scroll: bool = True) -> None:
        """Put the cursor on this row (clamped) and, with `scroll`, bring it into view."""
        row = max(0, min(row, len(self._order) - 1))
        if row != self.cursor_row:
            self._refresh_row(self.cursor_row)
            self.cursor_row = row
            self._refresh_row(row)
            self.cursor_moved(row)
        if scroll:
            self.scroll_to_region(Region(int(self.scroll_x), row + 1, 1, 1),
                                  spacing=Spacing(1, 0, 0, 0), animate=False, force=True,
                                  immediate=True)

    def select_job(self, job_id: int) -> bool:
        """Put the cursor on this job, if shown."""
        if job_id not in self._index:
            return False
        self.move_cursor(self._index[job_id])
        return True

    def _refresh_row(self, row: int) -> None:
        y = row + 1 - round(self.scroll_y)
        if 0 < y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def _set_hover(self, row: int | None) -> None:
        if row != self._hover:
            if self._hover is not None:
                self._refresh_row(self._hover)
            self._hover = row
            if row is not None:
                self._refresh_row(row)

    def _row_at(self, event: events.MouseEvent) -> int | None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return None  # the header, the scrollbars
        row = round(self.scroll_y) + offset.y - 1
        return row if row < len(self._order) else None

    def on_mouse_move(self, event: events.MouseMove) -> None:
        self._set_hover(self._row_at(event))

    def on_leave(self, _: events.Leave) -> None:
        self._set_hover(None)

    def on_click(self, event: events.Click) -> None:
        row = self._row_at(event)
        if row is None:
            return
        event.stop()
        if row == self.cursor_row:
            self.action_open()
        else:
            self.move_cursor(row)

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def action_open(self) -> None:
        """Open the job under the cursor."""
        job = self.selected_job
        if job is not None:
            self.opened(job)

    def action_cursor_up(self) -> None:
        self._set_hover(None)
        self.move_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self._set_hover(None)
        self.move_cursor(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self._set_hover(None)
        self.scroll_relative(y=-self._page(), animate=False, force=True, immediate=True)
        self.move_cursor(self.cursor_row - self._page())

    def action_page_down(self) -> None:
        self._set_hover(None)
        self.scroll_relative(y=self._page(), animate=False, force=True, immediate=True)
        self.move_cursor(self.cursor_row + self._page())

    def action_first(self) -> None:
        self._set_hover(None)
        self.move_cursor(0)

    def action_last(self) -> None:
        self._set_hover(None)
        if self.cursor_row == len(self._order) - 1:  # already there: say so again, as
            self.cursor_moved(self.cursor_row)  # more may follow
        self.move_cursor(len(self._order) - 1)

    def action_half_page(self, direction: int) -> None:
        self._set_hover(None)
        self.move_cursor(self.cursor_row + direction * max(1, self._page() // 2))

    def action_toggle_mark(self) -> None:
        """Mark the job under the cursor (or unmark it), and go to the next."""
        job = self.selected_job
        if job is None:
            return
        self.marked ^= {job.id}
        self._refresh_row(self.cursor_row)
        if self.cursor_row + 1 < len(self._order):
            self.move_cursor(self.cursor_row + 1)
        else:
            self.cursor_moved(self.cursor_row)

    def marked_jobs(self) -> list[JobInfo]:
        """The marked jobs still shown, top to bottom."""
        return [self.jobs[i] for i in self._order if i in self.marked]
