"""`AllServersScreen`: every configured server at once (issue 21): a GPU strip per
server, and the newest jobs of all of them in one table with a SERVER column first. A
server that does not answer is shown as down, with its reason in one line; the others
are shown as usual. Enter switches to the selected job's server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Header, Static
from textual.worker import Worker

from nai_tui.config import ServerEntry
from nai_tui.remote import fan_out
from nai_tui.remote.client import ServerClient
from nai_tui.tui.screens.base import NaiScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.format import gpus_text, state_text
from nai_tui.tui.widgets.gpu_strip import GpuStrip

PAGE = 100  # newest jobs read of each server per poll
TIMEOUT = 10.0  # seconds a server has to answer a poll before it is shown as down
COLUMNS = (("server", "SERVER"), ("id", "ID"), ("name", "NAME"), ("user", "USER"),
           ("state", "STATE"), ("gpus", "GPUS"))


class AllServersScreen(NaiScreen):
    """Escape goes back; r fetches now; Enter uses the selected job's server."""

    TITLE = "All servers"
    DEFAULT_CSS = """
    AllServersScreen #all-gpus { height: auto; max-height: 50%; }
    AllServersScreen #all-jobs { height: 1fr; }
    AllServersScreen #all-status { height: auto; padding: 0 1; color: $text-muted;
                                   background: $boost; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to this server's jobs"),
        Binding("r", "refresh", "Refresh", tooltip="Ask every server now"),
        Binding("enter", "use", "Use server", tooltip="Switch to the selected job's server"),
    ]

    class Fetched(Message):
        """Every server's answer: (jobs, gpus), or why there is none."""

        def __init__(self, answers: list[fan_out.Answer]) -> None:
            super().__init__()
            self.answers = answers

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[fan_out.Answer] = []
        self._fetching: Worker[None] | None = None
        self._timer: Timer | None = None

    @property
    def entries(self) -> list[ServerEntry]:
        """The configured servers, plus the one in use when it is not configured."""
        servers = list(self.nai.config.servers.values())
        if self.nai.server.name not in self.nai.config.servers:
            servers.insert(0, self.nai.server)
        return servers

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="all-gpus"):
            for entry in self.entries:
                yield GpuStrip(id=f"gpus-{entry.name}")
        yield DataTable(id="all-jobs", cursor_type="row")
        yield Static("asking every server…", id="all-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        for entry in self.entries:
            self._strip(entry.name).border_title = f"{entry.name} · asking…"
        self._timer = self.set_interval(self.nai.poll_interval, self.action_refresh)
        self.action_refresh()
        table.focus()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()

    def _strip(self, name: str) -> GpuStrip:
        return self.query_one(f"#gpus-{name}", GpuStrip)

    # --- fetching -----------------------------------------------------------------------

    def action_refresh(self) -> None:
        """Ask every server now (unless the last round is still out)."""
        if self._fetching is None or self._fetching.is_finished:
            self._fetching = self._fetch(self.entries)

    @contextlib.contextmanager
    def _connect(self, entry: ServerEntry) -> Iterator[ServerClient]:
        """The app's own client for the server in use; a fresh one for the others."""
        current = self.nai.client
        if entry.name == self.nai.server.name and current is not None:
            yield current
            return
        client = self.nai.connect_factory(entry)
        try:
            yield client
        finally:
            client.close()

    @work(thread=True, exit_on_error=False, group="all-servers")
    def _fetch(self, entries: list[ServerEntry]) -> None:
        answers = fan_out.ask_all(entries, self._connect,
                                  lambda c: (c.jobs(limit=PAGE).jobs, c.gpus()), TIMEOUT)
        self.post_message(self.Fetched(answers))

    def on_all_servers_screen_fetched(self, message: Fetched) -> None:
        self.answers = message.answers
        rows: list[tuple[str, Any]] = []
        for answer in message.answers:
            strip = self._strip(answer.server)
            if answer.error is None:
                jobs, gpus = answer.value
                strip.update_gpus(gpus)
                strip.border_title = (f"{answer.server} · {len(gpus.gpus)} GPUs "
                                      f"({gpus.source}) · CPU slots "
                                      f"{gpus.cpu_slots_used}/{gpus.cpu_slots}")
                rows += [(answer.server, job) for job in jobs]
            else:
                strip.update_gpus(None)
                strip.border_title = f"{answer.server} · {answer.status}"
        rows.sort(key=lambda row: -row[1].submitted_at)
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for server, job in rows:
            table.add_row(Text(server, style="bold"), str(job.id), job.name, job.user,
                          state_text(job.state), gpus_text(job), key=f"{server}#{job.id}")
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))
        self._status()

    def _status(self) -> None:
        up = [a.server for a in self.answers if a.error is None]
        status = Text(f"{self.query_one(DataTable).row_count} jobs from {len(up)} of "
                      f"{len(self.answers)} servers", style="bold")
        for answer in self.answers:
            if answer.error is not None:
                status.append(f"\n{answer.server}: {answer.status}: {answer.error}",
                              style="bold red")
        self.query_one("#all-status", Static).update(status)

    # --- actions ------------------------------------------------------------------------

    def action_use(self) -> None:
        """Switch to the selected job's server."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        key = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        name = key.rpartition("#")[0]
        entry = next(e for e in self.entries if e.name == name)
        self.dismiss()
        self.nai.switch_server(entry)

    def on_data_table_row_selected(self) -> None:
        self.action_use()

    def action_back(self) -> None:
        """Back to this server's jobs."""
        self.dismiss()
