"""`JobTable`: the queue as a table that is updated in place — rows keep their keys,
only changed cells are rewritten, and the cursor stays on the same job however the
order moves — so a refresh every two seconds neither flickers nor loses your place.

Columns have fixed widths computed from the table's width (names and notes are
clipped to fit): DataTable's automatic widths re-measure a whole column whenever a
cell narrows, which with 1,000 rows costs more than the refresh itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey

from nai_server.protocol import JobInfo
from nai_tui.widgets import format as fmt

# (key, label, width or None for the two columns that share what is left)
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "ID", 4), ("name", "NAME", None), ("user", "USER", 8), ("state", "STATE", 9),
    ("gpus", "GPUS", 5), ("time", "RUNTIME", 7), ("age", "AGE", 6),
    ("note", "NOTE", None))
PADDING = 2 * len(COLUMNS)  # one cell of padding on each side of every column
# Beyond this many removals at once, rebuilding is cheaper than removing row by row
# (each removal renumbers every row).
REBUILD_AFTER = 50

Cells = tuple[Text | str, ...]
STATES = {state: fmt.state_text(state) for state in fmt.ALL_STATES}


class JobTable(DataTable[Text | str]):
    """Jobs, one per row, keyed by job id. Feed it with `show(jobs, now)`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", tooltip="Open the job under the cursor"),
    ]
    DEFAULT_CSS = """
    JobTable {
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._cells: dict[int, Cells] = {}
        self._order: list[int] = []
        self._widths: tuple[int, ...] = ()
        self.jobs: dict[int, JobInfo] = {}

    @property
    def selected_job(self) -> JobInfo | None:
        """The job under the cursor, if any."""
        if not self._order or self.cursor_row < 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return self.jobs.get(int(key.value or 0))

    def widths(self, max_id: int) -> tuple[int, ...]:
        """Column widths for the current size: the name and the note share the rest."""
        fixed = {key: width for key, width, in ((k, w) for k, _, w in COLUMNS) if width}
        fixed["id"] = max(fixed["id"], len(str(max_id)))
        rest = max(20, (self.size.width or 80) - 2 - PADDING - sum(fixed.values()))
        name = min(32, max(16, rest // 2))  # names first: they are how you find a job
        shared = {"name": name, "note": max(8, rest - name)}
        return tuple(fixed.get(key) or shared[key] for key, _, _ in COLUMNS)

    def cells(self, job: JobInfo, now: float) -> Cells:
        """What the row of a job shows."""
        w = dict(zip((key for key, _, _ in COLUMNS), self._widths, strict=True))
        note = fmt.note(job)
        return (Text(str(job.id), justify="right"), fmt.clip(job.name, w["name"]),
                fmt.clip(job.user, w["user"]), STATES.get(job.state) or Text(job.state),
                fmt.clip(fmt.gpus_text(job), w["gpus"]), fmt.runtime(job, now),
                fmt.age(job, now),
                Text(fmt.clip(note, w["note"]), style="italic" if job.reason else "dim")
                if note else "")

    def show(self, jobs: Sequence[JobInfo], now: float) -> None:
        """Make the table show exactly these jobs, in their sensible order."""
        ordered = sorted(jobs, key=fmt.sort_key)
        widths = self.widths(max((job.id for job in ordered), default=0))
        if widths != self._widths:
            self._widths = widths
            self._cells = {}  # every cell is clipped anew: rebuild below
        wanted = {job.id: self.cells(job, now) for job in ordered}
        order = [job.id for job in ordered]
        self.jobs = {job.id: job for job in ordered}
        keep = self.selected_job
        gone = [job_id for job_id in self._cells if job_id not in wanted]
        if not self._cells or len(gone) > REBUILD_AFTER:
            self._rebuild(order, wanted)
        else:
            for job_id in gone:
                self.remove_row(str(job_id))
                del self._cells[job_id]
            for job_id in order:
                cells = wanted[job_id]
                old = self._cells.get(job_id)
                if old is None:
                    self.add_row(*cells, key=str(job_id))
                elif old != cells:
                    for (column, _, _), new, was in zip(COLUMNS, cells, old, strict=True):
                        if new != was:
                            self.update_cell(str(job_id), column, new)
                self._cells[job_id] = cells
            if self._current_order() != order:
                rank = {job_id: i for i, job_id in enumerate(order)}
                self.sort("id", key=lambda cell: rank[int(str(cell))])
        self._order = order
        if keep is not None and keep.id in self._cells:
            self.move_cursor(row=self.get_row_index(str(keep.id)), scroll=False)

    def _current_order(self) -> list[int]:
        index = self._row_locations  # private, but the cheapest way to read the order
        return [int(str(key.value)) for key in sorted(self.rows, key=index.get)]

    def _rebuild(self, order: list[int], wanted: dict[int, Cells]) -> None:
        scroll = self.scroll_offset
        self.clear(columns=True)
        for (key, label, _), width in zip(COLUMNS, self._widths, strict=True):
            self.add_column(label, key=key, width=width)
        for job_id in order:
            self.add_row(*wanted[job_id], key=str(job_id))
        self._cells = dict(wanted)
        self.scroll_to(scroll.x, scroll.y, animate=False, immediate=True)

    def select_job(self, job_id: int) -> bool:
        """Put the cursor on this job, if shown."""
        if job_id not in self._cells:
            return False
        self.move_cursor(row=self.get_row_index(RowKey(str(job_id))))
        return True
