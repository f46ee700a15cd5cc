"""`JobDetailScreen`: one job — its log (a pager over the server's file, followed live,
searched on the server), metric plots, spec and timeline, and its outputs to download."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Header, Input, TabbedContent, TabPane
from textual.worker import Worker

from nai_server.protocol import Forbidden, JobInfo, NotFound
from nai_tui.tui.messages import JobRefreshed, MetricsArrived, OutputsListed
from nai_tui.tui.screens.base import JobActionsScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.format import is_ended
from nai_tui.tui.widgets.job_info import JobHeader, JobSpec
from nai_tui.tui.widgets.log_text import error_line
from nai_tui.tui.widgets.log_view import LogSource, LogView
from nai_tui.tui.widgets.metric_plot import MetricPanel
from nai_tui.tui.widgets.output_tree import OutputTree
from nai_tui.tui.widgets.transfer_bar import TransferBar

FAILED_STATES = ("failed", "timed_out", "lost")
ERROR_TAIL = 64 << 10  # bytes of a failed job's log read for the line that says why


class JobDetailScreen(JobActionsScreen):
    """Everything about one job. Escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to the jobs"),
        Binding("c", "cancel_job", "Cancel", tooltip="Cancel this job"),
        Binding("p", "pull", "Pull", tooltip="Download all of this job's outputs, asked where "
                "(the project's place offered)"),
        Binding("P", "pull_here", "Pull here", show=False,
                tooltip="Pull the outputs to the project's place without asking"),
        Binding("d", "download_selected", "Download", show=False,
                tooltip="Download the output file or folder under the cursor"),
        Binding("y", "copy_id", "Copy id", show=False, tooltip="Copy this job's id"),
        Binding("f", "toggle_follow", "Follow", tooltip="Follow the log's end, or stop"),
        Binding("slash", "search", "Search", tooltip="Search the log"),
        Binding("n", "next_match(1)", "Next match", show=False),
        Binding("N", "next_match(-1)", "Previous match", show=False),
        Binding("t", "toggle_axis", "Step/time", show=False,
                tooltip="Plot metrics over steps or over time"),
        Binding("1", "tab('log')", "Log tab", show=False),
        Binding("2", "tab('metrics')", "Metrics tab", show=False),
        Binding("3", "tab('spec')", "Spec tab", show=False),
        Binding("4", "tab('outputs')", "Outputs tab", show=False),
    ]

    class Settled(Message):
        """The job has ended and everything it wrote has been fetched."""

    class LogGrew(Message):
        """The log is this many bytes long now."""

        def __init__(self, size: int) -> None:
            super().__init__()
            self.size = size

    class ErrorFound(Message):
        """The line of a failed job's log that says why ("" when none does)."""

        def __init__(self, line: str) -> None:
            super().__init__()
            self.line = line

    class Hidden(Message):
        """The server will not show this job's logs, metrics or outputs to us."""

        def __init__(self, why: str) -> None:
            super().__init__()
            self.why = why

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.job: JobInfo | None = None
        self.metrics_next = 0
        self.settled = False
        self.hidden = False
        self.title = f"Job {job_id}"

    def compose(self) -> ComposeResult:
        yield Header()
        yield JobHeader(f"job {self.job_id}: loading…", id="job-header")
        yield TransferBar()
        with TabbedContent(initial="log", id="tabs"):
            with TabPane("Log", id="log"):
                yield Input(placeholder="search the whole log (enter: find, escape: close)",
                            id="log-search", compact=True)
                yield LogView(id="log-view")
            with TabPane("Metrics", id="metrics"):
                yield MetricPanel(id="metric-panel")
            with TabPane("Spec", id="spec"), VerticalScroll():
                yield JobSpec(id="job-spec")
            with TabPane("Outputs", id="outputs"):
                yield OutputTree(id="output-tree")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#log-search").display = False
        self.query_one(OutputTree).show_message("outputs appear here once the job ends")
        log = self.query_one(LogView)
        log.source = LogSource(
            read=lambda offset, length: self.nai.api.log_piece(self.job_id, offset, length),
            # The view goes to the nearest match only: one is enough, and the server
            # stops reading there instead of scanning on for more.
            search=lambda text, offset, backward: self.nai.api.log_search(
                self.job_id, text, offset, backward=backward, limit=1))
        log.focus()

    # --- fetching -----------------------------------------------------------------------

    def wants_poll(self) -> bool:
        return not self.settled

    def fetch(self) -> Worker[None]:
        want_outputs = self.query_one(OutputTree).info is None
        want_error = self.query_one(JobHeader).error is None
        return self._fetch(self.metrics_next, want_outputs, self.hidden, want_error)

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def _fetch(self, metrics_next: int, want_outputs: bool, hidden: bool,
               want_error: bool = False) -> None:
        client = self.nai.api
        job = client.job(self.job_id)
        self.post_message(JobRefreshed(job))
        if hidden:
            if is_ended(job):
                self.post_message(self.Settled())
            return
        try:
            # Only the size: the log view reads what it shows itself.
            _, size = client.log_range(self.job_id, 0, 0)
            self.post_message(self.LogGrew(size))
            if want_error and job.state in FAILED_STATES and size:
                at = max(0, size - ERROR_TAIL)
                tail = client.log_piece(self.job_id, at, ERROR_TAIL)
                self.post_message(self.ErrorFound(error_line(tail) or ""))
            page = client.metrics(self.job_id, metrics_next)
            if page.metrics:
                self.post_message(MetricsArrived(self.job_id, metrics_next, page.metrics,
                                                 page.next))
            if is_ended(job) and want_outputs and job.output_tree:
                self.post_message(OutputsListed(self.job_id, client.outputs(self.job_id)))
        except (Forbidden, NotFound) as exc:
            self.post_message(self.Hidden(str(exc)))
        if is_ended(job):
            # It had ended before the log and metrics were read: nothing more will come.
            self.post_message(self.Settled())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Cancel only while the job may end, Pull only once it has."""
        if action in ("cancel_job", "pull", "pull_here", "download_selected"):
            if self.job is None:
                return False
            return not is_ended(self.job) if action == "cancel_job" else is_ended(self.job)
        return True

    def on_job_refreshed(self, message: JobRefreshed) -> None:
        changed = self.job is None or self.job.state != message.job.state
        self.job = message.job
        if changed:
            self.refresh_bindings()
        now = self.nai.clock()
        self.title = f"Job {self.job.id}: {self.job.name}"
        self.query_one(JobHeader).show(self.job, now)
        self.query_one(JobSpec).show(self.job, now)
        if is_ended(self.job) and self.job.output_tree is None:
            self.query_one(OutputTree).show_message(
                "no outputs (the job wrote nothing to $NAI_OUTPUT_DIR)"
                if self.job.state == "succeeded" else f"no outputs ({self.job.state})")

    # A fetch can start before the messages of the previous one are handled: what it
    # brings is applied only if it starts where the screen is.

    def on_job_detail_screen_error_found(self, message: ErrorFound) -> None:
        header = self.query_one(JobHeader)
        header.error = message.line
        if self.job is not None:
            header.show(self.job, self.nai.clock())

    def on_job_detail_screen_log_grew(self, message: LogGrew) -> None:
        self.query_one(LogView).grow(message.size)

    def on_metrics_arrived(self, message: MetricsArrived) -> None:
        if message.since != self.metrics_next:
            return
        self.metrics_next = message.next
        self.query_one(MetricPanel).add_rows(message.rows)

    def on_outputs_listed(self, message: OutputsListed) -> None:
        self.query_one(OutputTree).show_tree(message.tree)

    def on_job_detail_screen_settled(self) -> None:
        self.settled = True

    def on_job_detail_screen_hidden(self, message: Hidden) -> None:
        if not self.hidden:
            self.hidden = True
            self.query_one(LogView).show_message(f"({message.why})")
            self.query_one(OutputTree).show_message(message.why)

    # --- actions ------------------------------------------------------------------------

    def current_job(self) -> JobInfo | None:
        return self.job

    def action_back(self) -> None:
        """Back to the jobs."""
        search = self.query_one("#log-search", Input)
        if search.display:
            self._close_search()
        else:
            self.dismiss()

    def action_tab(self, tab: str) -> None:
        """Show a tab: log, metrics, spec or outputs."""
        self.query_one(TabbedContent).active = tab

    def action_toggle_follow(self) -> None:
        """Follow the end of the log, or stop to read back."""
        log = self.query_one(LogView)
        log.follow(not log.following)
        self.notify("Following the log" if log.following else "Stopped following the log")

    def action_search(self) -> None:
        """Search the log."""
        self.action_tab("log")
        search = self.query_one("#log-search", Input)
        search.display = True
        search.focus()

    def _close_search(self) -> None:
        search = self.query_one("#log-search", Input)
        search.display = False
        self.query_one(LogView).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "log-search":
            self._close_search()
            log = self.query_one(LogView)
            log.match_offset = None  # a new term: from the top line on screen
            self._find(event.value, +1)

    def _find(self, term: str, direction: int) -> None:
        def done(offset: int | None) -> None:
            if offset is None:
                self.notify(f"{term!r} is not in the log", severity="warning")

        self.query_one(LogView).search(term, direction, done=done)

    def action_next_match(self, direction: int) -> None:
        """Jump to the next (or previous) search match, across the whole log."""
        log = self.query_one(LogView)
        if not log.term:
            self.action_search()
        else:
            self._find(log.term, direction)

    def action_toggle_axis(self) -> None:
        """Plot metrics over steps or over elapsed time."""
        axis = self.query_one(MetricPanel).toggle_axis()
        self.notify(f"Metrics over {axis}")

    def action_download_selected(self) -> None:
        """Download the output file or folder under the cursor."""
        self.action_tab("outputs")
        self.action_pull(self.query_one(OutputTree).selected_path)

    def on_tree_node_selected(self, event: OutputTree.NodeSelected[str]) -> None:
        if event.node.data and not event.node.allow_expand:
            self.action_pull(event.node.data)
