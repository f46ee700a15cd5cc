"""`JobDetailScreen`: one job — its log (followed live, searchable), metric plots,
spec and timeline, and its outputs to download."""

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
from nai_tui.tui.messages import JobRefreshed, LogAppended, MetricsArrived, OutputsListed
from nai_tui.tui.screens.base import JobActionsScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.format import is_ended
from nai_tui.tui.widgets.job_info import JobHeader, JobSpec
from nai_tui.tui.widgets.log_view import LogView
from nai_tui.tui.widgets.metric_plot import MetricPanel
from nai_tui.tui.widgets.output_tree import OutputTree
from nai_tui.tui.widgets.transfer_bar import TransferBar


class JobDetailScreen(JobActionsScreen):
    """Everything about one job. Escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to the jobs"),
        Binding("c", "cancel_job", "Cancel", tooltip="Cancel this job"),
        Binding("p", "pull", "Pull", tooltip="Download all of this job's outputs"),
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

    class Hidden(Message):
        """The server will not show this job's logs, metrics or outputs to us."""

        def __init__(self, why: str) -> None:
            super().__init__()
            self.why = why

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.job: JobInfo | None = None
        self.log_offset = 0
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
                yield Input(placeholder="search the log (enter: next, escape: close)",
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
        self.query_one(LogView).focus()

    # --- fetching -----------------------------------------------------------------------

    def wants_poll(self) -> bool:
        return not self.settled

    def fetch(self) -> Worker[None]:
        want_outputs = self.query_one(OutputTree).info is None
        return self._fetch(self.log_offset, self.metrics_next, want_outputs, self.hidden)

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def _fetch(self, log_offset: int, metrics_next: int, want_outputs: bool,
               hidden: bool) -> None:
        client = self.nai.api
        job = client.job(self.job_id)
        self.post_message(JobRefreshed(job))
        if hidden:
            if is_ended(job):
                self.post_message(self.Settled())
            return
        try:
            data = client.logs(self.job_id, log_offset)
            if data:
                self.post_message(LogAppended(self.job_id, log_offset, data))
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

    def on_job_refreshed(self, message: JobRefreshed) -> None:
        self.job = message.job
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

    def on_log_appended(self, message: LogAppended) -> None:
        if message.offset != self.log_offset:
            return
        self.log_offset += len(message.data)
        self.query_one(LogView).feed(message.data)

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
            self.query_one(LogView).write_line(f"({message.why})")
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

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "log-search":
            self.query_one(LogView).search(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "log-search":
            log = self.query_one(LogView)
            if log.next_match(+1) is None and event.value:
                self.notify(f"{event.value!r} is not in the log", severity="warning")

    def action_next_match(self, direction: int) -> None:
        """Jump to the next (or previous) search match."""
        log = self.query_one(LogView)
        if not log.term:
            self.action_search()
        elif log.next_match(direction) is None:
            self.notify(f"{log.term!r} is not in the log", severity="warning")

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
