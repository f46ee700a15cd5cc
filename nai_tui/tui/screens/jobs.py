"""`JobsScreen`, the home screen: the GPUs, and the queue as a live table with
filters (mine/all, state, free text)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Header, Input, Select, Static
from textual.worker import Worker

from nai_server.protocol import JobInfo
from nai_tui.tui.messages import JobsRefreshed
from nai_tui.tui.screens.base import JobActionsScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.format import ACTIVE_STATES, ALL_STATES, WAITING_STATES
from nai_tui.tui.widgets.gpu_strip import GpuStrip
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.transfer_bar import TransferBar

PAGE = 300  # newest jobs fetched per poll; running and queued ones are always fetched
STATE_CHOICES = [("any state", "")] + [(s.replace("_", " "), s) for s in ALL_STATES]
SCOPE_CHOICES = [("everyone", "all"), ("mine", "mine")]


def matches(job: JobInfo, text: str) -> bool:
    """Free-text filter: every word must appear in the id, name, user, state or note."""
    hay = f"#{job.id} {job.id} {job.name} {job.user} {job.state} {job.reason or ''} " \
          f"{job.message or ''} {job.group or ''}".lower()
    return all(word in hay for word in text.lower().split())


class JobsScreen(JobActionsScreen):
    """The queue. Enter opens a job; n submits a new one."""

    TITLE = "Jobs"
    AUTO_FOCUS = "#jobs"  # the table, straight away: not the filter first, then the table
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "submit", "Submit", tooltip="Submit a folder as a new job"),
        Binding("c", "cancel_job", "Cancel", tooltip="Cancel the selected job"),
        Binding("p", "pull", "Pull", tooltip="Download the selected job's outputs"),
        Binding("y", "copy_id", "Copy id", tooltip="Copy the selected job's id",
                show=False),
        Binding("m", "toggle_mine", "Mine/all", tooltip="Show my jobs or everyone's"),
        Binding("slash", "focus_filter", "Filter", tooltip="Filter jobs by text"),
        Binding("D", "registry('dataset')", "Datasets", tooltip="Browse the datasets", show=False),
        Binding("M", "registry('model')", "Models", tooltip="Browse the models", show=False),
        Binding("s", "cycle_state", "State filter", show=False,
                tooltip="Filter by the next state"),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Refresh now"),
        Binding("escape", "clear_filter", "Clear filter", show=False,
                tooltip="Clear the text filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[JobInfo] = []
        self.total = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield GpuStrip(id="gpus")
        with Horizontal(id="filters"):
            yield Input(placeholder="/ filter: name, user, #id, state, reason…",
                        id="filter-text", compact=True)
            yield Select(SCOPE_CHOICES, value="all", allow_blank=False, id="filter-scope",
                         compact=True)
            yield Select(STATE_CHOICES, value="", allow_blank=False, id="filter-state",
                         compact=True)
        yield JobTable(id="jobs")
        yield TransferBar()
        yield Static("connecting…", id="jobs-status")
        yield Footer()

    # --- fetching -----------------------------------------------------------------------

    @property
    def scope(self) -> str:
        return str(self.query_one("#filter-scope", Select).value)

    @property
    def state_filter(self) -> str:
        return str(self.query_one("#filter-state", Select).value or "")

    def fetch(self) -> Worker[None]:
        return self._fetch(self.scope, self.state_filter or None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def _fetch(self, scope: str, state: str | None) -> None:
        client = self.nai.api
        listing = client.jobs(scope=scope, state=state, limit=PAGE)
        jobs = {job.id: job for job in listing.jobs}
        if listing.total > len(listing.jobs) and state is None:
            # Older jobs still running or waiting belong on screen too.
            for active in (*ACTIVE_STATES, *WAITING_STATES):
                for job in client.jobs(scope=scope, state=active, limit=1000).jobs:
                    jobs.setdefault(job.id, job)
        gpus = client.gpus()
        self.post_message(JobsRefreshed(list(jobs.values()), listing.total, gpus,
                                        (scope, state or "")))

    def on_jobs_refreshed(self, message: JobsRefreshed) -> None:
        if message.query != (self.scope, self.state_filter):
            return  # fetched for filters changed since; the next fetch follows
        self.jobs, self.total = message.jobs, message.total
        if message.gpus is not None:
            self.query_one(GpuStrip).update_gpus(message.gpus)
        self._show()

    def _show(self) -> None:
        text = self.query_one("#filter-text", Input).value.strip()
        state = self.state_filter
        shown = [j for j in self.jobs if (not state or j.state == state)
                 and (not text or matches(j, text))]
        self.query_one(JobTable).show(shown, self.nai.clock())
        self._status(shown)

    def _status(self, shown: list[JobInfo]) -> None:
        counts: dict[str, int] = {}
        for job in shown:
            counts[job.state] = counts.get(job.state, 0) + 1
        running = sum(counts.get(s, 0) for s in ACTIVE_STATES)
        waiting = sum(counts.get(s, 0) for s in WAITING_STATES)
        status = Text(f"{len(shown)} shown", style="bold")
        status.append(f" · {running} running · {waiting} queued")
        if self.total > len(self.jobs):
            status.append(f" · newest {len(self.jobs)} of {self.total}", style="dim")
        line = self.query_one("#jobs-status", Static)
        if line.content != status:  # one line, fixed height: no layout needed either
            line.update(status, layout=False)

    def reset(self) -> None:
        """Forget what was shown (the server changed)."""
        self.jobs, self.total = [], 0
        self.query_one(JobTable).show([], self.nai.clock())
        self.query_one(GpuStrip).update_gpus(None)
        self.query_one("#jobs-status", Static).update("connecting…")

    # --- filters ------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter-text":
            self._show()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter-text":
            self.query_one(JobTable).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._show()
        self.poll(again=True)

    def action_focus_filter(self) -> None:
        """Type to filter the jobs."""
        self.query_one("#filter-text", Input).focus()

    def action_clear_filter(self) -> None:
        """Clear the text filter and go back to the table."""
        self.query_one("#filter-text", Input).value = ""
        self.query_one(JobTable).focus()

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
