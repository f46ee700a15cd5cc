"""`ServersScreen`: the configured servers, whether each answers, and switching."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Header, Static

from nai_tui.config import ClientConfig, ConfigError, ServerEntry, personal_socket
from nai_tui.tui.messages import ServerProbed
from nai_tui.tui.screens.base import NaiScreen
from nai_tui.tui.widgets.footer import Footer

STATE_STYLE = {"connected": "bold green", "answers": "green", "lost": "bold red",
               "unreachable": "red", "connecting": "yellow", "reconnecting": "yellow",
               "checking…": "dim"}


class ServersScreen(NaiScreen):
    """Enter switches to the server under the cursor."""

    TITLE = "Servers"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back without switching"),
        Binding("enter", "use", "Use", tooltip="Switch to the selected server"),
        Binding("r", "probe", "Check again", tooltip="Check whether each server answers"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, tuple[str, str]] = {}

    @property
    def entries(self) -> list[ServerEntry]:
        """The configured servers, plus the one in use when it is not configured, plus
        this machine's personal daemon when it runs (adding a first remote server
        must not hide it)."""
        servers = list(self.nai.config.servers.values())
        if self.nai.server.name not in self.nai.config.servers:
            servers.insert(0, self.nai.server)
        if not any(s.is_local for s in servers) and personal_socket().exists():
            servers.insert(0, ServerEntry("local", "local"))
        return servers

    def reread(self) -> None:
        """Take the config file as it is now: `nai server add` may have changed it
        since the TUI started. A file that cannot be read keeps the last good one."""
        note = self.query_one("#servers-note", Static)
        try:
            self.nai.config = ClientConfig.load(self.nai.config.path)
        except ConfigError as exc:
            note.update(Text(f"{exc}\nShowing the servers as they were.", style="red"))
            return
        note.update(f"Configured in {self.nai.config.path}; add one with "
                    "`nai server add NAME ssh://user@host`, then r.")

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="servers", cursor_type="row")
        yield Static("", id="servers-note")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in (("name", "NAME"), ("url", "URL"), ("transport", "TRANSPORT"),
                           ("state", "STATE"), ("detail", "")):
            table.add_column(label, key=key)
        self.action_probe()
        table.focus()

    def _list(self) -> None:
        table = self.query_one(DataTable)
        selected = (str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
                    if table.row_count else self.nai.server.name)
        table.clear()
        for entry in self.entries:
            default = " (default)" if entry.name == self.nai.config.default else ""
            table.add_row(entry.name + default, entry.url,
                          "local socket" if entry.is_local else entry.transport,
                          "", "", key=entry.name)
        names = [e.name for e in self.entries]
        if selected in names:
            table.move_cursor(row=names.index(selected))

    def _set_state(self, name: str, state: str, detail: str = "") -> None:
        self.states[name] = (state, detail)
        table = self.query_one(DataTable)
        table.update_cell(name, "state", Text(state, style=STATE_STYLE.get(state, "")),
                          update_width=True)
        table.update_cell(name, "detail", Text(detail, style="dim"), update_width=True)

    def action_probe(self) -> None:
        """Reread the config and check whether each server answers."""
        self.reread()
        self._list()
        for entry in self.entries:
            if entry.name == self.nai.server.name:
                who = f"as {self.nai.me.user}" if self.nai.me and self.nai.connected else ""
                self._set_state(entry.name, self.nai.connection, who)
            else:
                self._set_state(entry.name, "checking…")
                self._probe(entry)

    @work(thread=True, exit_on_error=False, group="probe")
    def _probe(self, entry: ServerEntry) -> None:
        try:
            client = self.nai.connect_factory(entry)
        except Exception as exc:
            self.post_message(ServerProbed(entry.name, str(exc)))
            return
        try:
            client.check_version()
            self.post_message(ServerProbed(entry.name, None, client.me().user))
        except Exception as exc:
            self.post_message(ServerProbed(entry.name, str(exc)))
        finally:
            if client is not self.nai.client:
                client.close()

    def on_server_probed(self, message: ServerProbed) -> None:
        if message.server not in self.query_one(DataTable).rows:
            return  # gone from the config since the check began
        if message.error is None:
            self._set_state(message.server, "answers", f"as {message.user}")
        else:
            self._set_state(message.server, "unreachable", message.error.splitlines()[0])

    def action_use(self) -> None:
        """Switch to the server under the cursor."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        name = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        entry = next(e for e in self.entries if e.name == name)
        self.dismiss()
        self.nai.switch_server(entry)

    def on_data_table_row_selected(self) -> None:
        self.action_use()

    def action_back(self) -> None:
        """Back without switching."""
        self.dismiss()
