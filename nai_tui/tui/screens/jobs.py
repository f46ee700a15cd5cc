"""`JobsScreen`, the home screen: the GPUs, and the queue as a live table with
filters (mine/all, state, and a filter line: see `nai_tui.tui.filters`), read
completely from the server page by page (see `nai_tui.tui.queue`)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Header, Input, Select, Static
from textual.worker import Worker

from nai_server.protocol import ApiError, GpuList, JobInfo
from nai_server.protocol.usage import UsageReport
from nai_tui.remote.usage import read_usage
from nai_tui.tui.filters import JobFilter, parse_filter
from nai_tui.tui.queue import Query, QueuePoll, older_page, poll_queue
from nai_tui.tui.screens.marked import MarkedJobsScreen
from nai_tui.tui.widgets import format as fmt
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.format import ACTIVE_STATES, ALL_STATES, WAITING_STATES, is_ended
from nai_tui.tui.widgets.gpu_strip import GpuStrip
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.transfer_bar import TransferBar
from nai_tui.tui.widgets.usage import strip_summary

STATE_CHOICES = [("any state", "")] + [(s.replace("_", " "), s) for s in ALL_STATES]
SCOPE_CHOICES = [("everyone", "all"), ("mine", "mine")]
NEAR_END = 100  # rows from the table's end at which older history is read


class JobsScreen(MarkedJobsScreen):
    """The queue. Enter opens a job; n submits a new one."""

    TITLE = "Jobs"
    AUTO_FOCUS = "#jobs"  # the table, straight away: not the filter first, then the table
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "submit", "Submit", tooltip="Submit a folder as a new job"),
        Binding("c", "cancel_job", "Cancel", tooltip="Cancel the selected job, or the "
                "marked ones"),
        Binding("p", "pull", "Pull", tooltip="Download the selected job's outputs, asked where "
                "(the project's place offered)"),
        Binding("P", "pull_here", "Pull here", show=False,
                tooltip="Pull the outputs to the project's place without asking"),
        Binding("C", "compare", "Compare", show=False,
                tooltip="Compare the marked jobs (2 to 6): metrics, specs, final metrics"),
        Binding("y", "copy_id", "Copy id", tooltip="Copy the selected job's id",
                show=False),
        Binding("m", "toggle_mine", "Mine/all", tooltip="Show my jobs or everyone's"),
        Binding("slash", "focus_filter", "Filter", tooltip="Filter: words, #id, user:NAME, "
                "state:STATE, gpus:>N, name~REGEX"),
        Binding("D", "registry('dataset')", "Datasets", tooltip="Browse the datasets", show=False),
        Binding("M", "registry('model')", "Models", tooltip="Browse the models", show=False),
        Binding("O", "all_servers", "All servers", show=False,
                tooltip="Every configured server's GPUs and jobs, side by side"),
        Binding("s", "cycle_state", "State filter", show=False,
                tooltip="Filter by the next state"),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Refresh now"),
        Binding("escape", "clear_filter", "Clear filters", show=False,
                tooltip="Clear every filter (text, state, mine) and the marks"),
    ]

    class Polled(Message):
        def __init__(self, poll: QueuePoll, gpus: GpuList,
                     usage: UsageReport | None = None) -> None:
            super().__init__()
            self.poll, self.gpus, self.usage = poll, gpus, usage

    class MoreLoaded(Message):
        def __init__(self, query: Query, jobs: list[JobInfo], older: int | None) -> None:
            super().__init__()
            self.query, self.jobs, self.older = query, jobs, older

    def __init__(self) -> None:
        super().__init__()
        self.loaded: dict[int, JobInfo] = {}  # every job read for the current query
        self.older: int | None = None  # the cursor below the oldest page read
        self.paged = False  # whether older pages were read (then `older` is theirs)
        self.total = 0
        self.counts: dict[str, int] = {}
        self.loaded_for: Query | None = None
        self._asked: Query | None = None  # what the latest fetch asked the server for
        self._more: Worker[None] | None = None
        self.usage_answers = True  # whether the server has GET /v1/usage

    @property
    def jobs(self) -> list[JobInfo]:
        return list(self.loaded.values())

    def compose(self) -> ComposeResult:
        yield Header()
        yield GpuStrip(id="gpus")
        with Horizontal(id="filters"):
            yield Input(placeholder="/ filter: words #id user:NAME state:STATE gpus:>N "
                        "name~REGEX", id="filter-text", compact=True)
            yield Select(SCOPE_CHOICES, value="all", allow_blank=False, id="filter-scope",
                         compact=True)
            yield Select(STATE_CHOICES, value="", allow_blank=False, id="filter-state",
                         compact=True)
        yield JobTable(id="jobs")
        yield Static(id="jobs-note")
        yield TransferBar()
        yield Static("connecting…", id="jobs-status")
        yield Footer()

    # --- fetching -----------------------------------------------------------------------

    @property
    def scope(self) -> str:
        value = self.query_one("#filter-scope", Select).value
        return value if isinstance(value, str) else "all"  # blank until mounted

    @property
    def state_filter(self) -> str:
        value = self.query_one("#filter-state", Select).value
        return value if isinstance(value, str) else ""

    def ready_to_fetch(self) -> bool:
        """From the moment the app connects, mounted or not: the first jobs are on
        their way while the screen is still being laid out (its filters read as their
        defaults until then)."""
        return bool(self.query("#filter-scope"))

    @property
    def text_filter(self) -> JobFilter:
        return parse_filter(self.query_one("#filter-text", Input).value)

    def server_query(self) -> Query:
        """What the server filters by: mine/all, the state, and `user:` of the text."""
        typed = self.text_filter
        return (self.scope, typed.state or self.state_filter, typed.user or "")

    def fetch(self) -> Worker[None]:
        query = self._asked = self.server_query()
        stale = [j.id for j in self.loaded.values() if not is_ended(j)] \
            if query == self.loaded_for else []
        return self._fetch(query, stale)

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def _fetch(self, query: Query, stale: list[int]) -> None:
        client = self.nai.api
        poll = poll_queue(client, query, stale)
        gpus = client.gpus()
        usage = None
        if self.usage_answers:
            try:
                usage = read_usage(client)
            except ApiError:
                self.usage_answers = False  # an older server: no usage to show
        self.post_message(self.Polled(poll, gpus, usage))

    def on_jobs_screen_polled(self, message: Polled) -> None:
        poll = message.poll
        strip = self.query_one(GpuStrip)
        strip.update_gpus(message.gpus)
        strip.update_usage(strip_summary(
            message.usage, self.nai.me.user if self.nai.me else None))
        if poll.query != self.server_query():
            return  # fetched for filters changed since; the next fetch follows
        if poll.query != self.loaded_for:
            self.loaded, self.paged, self.loaded_for = {}, False, poll.query
        self.loaded.update((job.id, job) for job in poll.jobs)
        if not self.paged:
            self.older = poll.older
        self.total, self.counts = poll.total, poll.counts
        self._show()
        self._want_more()

    def load_more(self) -> None:
        """Read the next page of older history (if there is one, and none is on its way)."""
        if self.older is None or self.loaded_for is None or (
                self._more is not None and not self._more.is_finished):
            return
        self._more = self._fetch_older(self.loaded_for, self.older)

    @work(thread=True, exit_on_error=False, group="history")
    def _fetch_older(self, query: Query, before: int) -> None:
        jobs, older = older_page(self.nai.api, query, before)
        self.post_message(self.MoreLoaded(query, jobs, older))

    def on_jobs_screen_more_loaded(self, message: MoreLoaded) -> None:
        # Its worker is done once this arrives (it may not have returned yet): the
        # next page must not wait for it to, or reading on would stop here.
        self._more = None
        if message.query != self.loaded_for:
            return
        for job in message.jobs:
            self.loaded.setdefault(job.id, job)
        self.older, self.paged = message.older, True
        self._show()
        self._want_more()

    def _want_more(self) -> None:
        """Read on while a filter matched here searches the history, or the cursor
        is near the end of what was read."""
        table = self.query_one(JobTable)
        if self.text_filter.local or table.cursor_row >= table.row_count - NEAR_END:
            self.load_more()

    def on_job_table_cursor_moved(self, event: JobTable.CursorMoved) -> None:
        self.refresh_bindings()  # Cancel and Pull follow the selected job's state
        self._status()  # the marks may have changed
        if event.row >= event.table.row_count - NEAR_END:
            self.load_more()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide Cancel on a finished job (unless jobs are marked), Pull on an unfinished one."""
        if action in ("cancel_job", "pull", "pull_here"):
            if not self.is_mounted:
                return False  # no job selected yet (one footer rebuild fewer at start)
            table = self.query_one(JobTable)
            job = table.selected_job
            if action == "cancel_job":
                return bool(table.marked_jobs()) or (job is not None and not is_ended(job))
            return job is not None and is_ended(job)
        return True

    def _show(self) -> None:
        typed = self.text_filter
        state = typed.state or self.state_filter
        shown = [j for j in self.loaded.values() if (not state or j.state == state)
                 and typed.matches(j)]
        table = self.query_one(JobTable)
        if typed.problem:
            table.empty_text = f"filter: {typed.problem}"
        elif not typed.empty or state or self.scope == "mine":
            table.empty_text = "no job matches these filters (escape clears them)"
        else:
            table.empty_text = "no jobs on this server yet (n submits one)"
        table.show(shown, self.nai.clock())
        self._status()

    def _status(self) -> None:
        running = sum(self.counts.get(s, 0) for s in ACTIVE_STATES)
        waiting = sum(self.counts.get(s, 0) for s in WAITING_STATES)
        status = Text(f"{self.query_one(JobTable).row_count} shown", style="bold")
        status.append(f" · {running} running · {waiting} queued")
        self._note()
        marked = len(self.query_one(JobTable).marked_jobs())
        if marked:
            status.append(f" · {marked} marked", style="bold magenta")
        if self.older is not None:
            status.append(f" · {len(self.loaded)} of {self.total} read", style="dim")
            if self.text_filter.local:
                status.append(" (searching the history…)", style="dim")
        elif self.total:
            status.append(f" · all {self.total} read", style="dim")
        line = self.query_one("#jobs-status", Static)
        if line.content != status:  # one line, fixed height: no layout needed either
            line.update(status, layout=False)

    def _note(self) -> None:
        """The selected job's whole note, under the table, when its cell cuts it."""
        table = self.query_one(JobTable)
        job, line = table.selected_job, self.query_one("#jobs-note", Static)
        note = fmt.note(job) if job is not None else ""
        clipped = bool(note) and len(note) > table.note_width
        text = Text.assemble((f"#{job.id} ", "bold"), (note, "italic")) \
            if clipped and job is not None else Text()
        if line.content != text:
            line.update(text)
        line.set_class(clipped, "-clipped")

    def reset(self) -> None:
        """Forget what was shown (the server changed)."""
        self.loaded, self.older, self.paged, self.loaded_for = {}, None, False, None
        self.total, self.counts = 0, {}
        self.query_one(JobTable).show([], self.nai.clock())
        self.query_one(GpuStrip).update_gpus(None)
        self.query_one("#jobs-status", Static).update("connecting…")

    # --- filters ------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter-text":
            self._show()
            if self.server_query() != self.loaded_for:
                self.poll(again=True)  # user: or state: typed: the server filters
            else:
                self._want_more()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter-text":
            self.query_one(JobTable).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._show()
        if self.server_query() not in (self.loaded_for, self._asked):
            self.poll(again=True)  # not on the Selects' first Changed, at mount

    def action_focus_filter(self) -> None:
        """Type to filter the jobs."""
        self.query_one("#filter-text", Input).focus()

    def action_clear_filter(self) -> None:
        """Clear every filter (text, state, mine) and the marks; back to the table."""
        self.query_one("#filter-text", Input).value = ""
        self.query_one("#filter-state", Select).value = ""
        self.query_one("#filter-scope", Select).value = "all"
        table = self.query_one(JobTable)
        table.marked.clear()
        table.refresh()
        table.focus()
        self._show()

    def action_toggle_mine(self) -> None:
        """Show only my jobs, or everyone's."""
        select = self.query_one("#filter-scope", Select)
        select.value = "mine" if select.value == "all" else "all"

    def action_cycle_state(self) -> None:
        """Filter by the next state (any → starting → running → …)."""
        select = self.query_one("#filter-state", Select)
        values = [value for _, value in STATE_CHOICES]
        select.value = values[(values.index(str(select.value or "")) + 1) % len(values)]

    def action_refresh(self) -> None:
        """Fetch now instead of at the next tick."""
        self.poll()

    # --- jobs ---------------------------------------------------------------------------

    def current_job(self) -> JobInfo | None:
        return self.query_one(JobTable).selected_job

    def on_job_table_opened(self, event: JobTable.Opened) -> None:
        self.open_job(event.job.id)

    def open_job(self, job_id: int) -> None:
        from nai_tui.tui.screens.job_detail import JobDetailScreen

        self.app.push_screen(JobDetailScreen(job_id))

    def action_submit(self) -> None:
        """Submit a folder as a new job."""
        from nai_tui.tui.screens.submit import SubmitScreen

        self.app.push_screen(SubmitScreen())

    def action_all_servers(self) -> None:
        """Every configured server's GPUs and jobs, side by side."""
        from nai_tui.tui.screens.all_servers import AllServersScreen

        self.app.push_screen(AllServersScreen())

    def action_registry(self, kind: str) -> None:
        """Browse the datasets or the models."""
        self.nai.open_registry(kind)

    def on_gpu_strip_clicked(self, event: GpuStrip.Clicked) -> None:
        if event.gpu.job is not None and not self.query_one(JobTable).select_job(event.gpu.job):
            self.open_job(event.gpu.job)

    def commands(self) -> list[tuple[str, Any]]:
        """Palette entries for the jobs on screen: open each by id or name."""
        return [(f"Open job #{job.id} {job.name} ({job.user}, {job.state})",
                 lambda job_id=job.id: self.open_job(job_id))
                for job in self.query_one(JobTable).jobs.values()]
