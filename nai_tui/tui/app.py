"""The terminal UI: `nai` with no arguments. The app holds the connection (one
server at a time, reconnecting with backoff) and maps every worker failure to a
notification; the screens do the rest."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from nai_server.protocol import ConnectionFailed, Me, NaiError
from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.remote.backoff import Backoff
from nai_tui.remote.client import ServerClient, local_http_client
from nai_tui.tui.messages import Connected, ConnectionLost, WorkFailed
from nai_tui.tui.palette import NaiCommands
from nai_tui.tui.ports import ClientFactory, SyncTransfers, Transfers, connect_entry, reconnects
from nai_tui.tui.screens.jobs import JobsScreen


def connect_local_first(entry: ServerEntry) -> ServerClient:
    """`connect_entry`, with a short cut for a daemon on this machine: that one needs
    neither SSH nor the batch commands `connect_entry` imports (a tenth of a second
    the TUI would spend before its first call)."""
    if entry.is_local and entry.socket.exists():
        return ServerClient(local_http_client(entry.socket), name=entry.name)
    return connect_entry(entry)


class NaiApp(App[int]):
    """Give it a way to connect (`connect(entry) -> ServerClient`); everything else has
    defaults a test may replace: the clock, transfers, the poll interval, the backoff."""

    CSS_PATH = "app.tcss"
    TITLE = "nai"
    COMMANDS = App.COMMANDS | {NaiCommands}
    # Textual declares it on instances; the class's value is the default for all.
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [  # type: ignore[misc]
        (0, "-narrow"), (120, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", tooltip="Show the keys of this screen"),
        Binding("S", "servers", "Servers", tooltip="Choose among the configured servers"),
        Binding("A", "admin", "Admin", tooltip="Users, groups, quotas and drain"),
        Binding("V", "services", "Services", show=False,
                tooltip="Models served as web services"),
        Binding("R", "reconnect", "Reconnect", tooltip="Try to reach the server now"),
        Binding("q", "quit", "Quit", tooltip="Leave nai"),
    ]

    def __init__(self, connect: ClientFactory = connect_local_first, *,
                 config: ClientConfig | None = None, server: ServerEntry | None = None,
                 clock: Callable[[], float] = time.time, transfers: Transfers | None = None,
                 poll_interval: float = 2.0, backoff: Backoff | None = None,
                 downloads: Path | None = None) -> None:
        super().__init__()
        self.connect_factory = connect
        self.config = config or ClientConfig(Path("/nonexistent/nai/config.yaml"))
        self.server = server or self.config.choose()
        self.clock = clock
        self.transfers: Transfers = transfers or SyncTransfers()
        self.poll_interval = poll_interval
        self.backoff = backoff or reconnects()
        self.downloads = downloads or Path.cwd() / "nai-outputs"
        self.client: ServerClient | None = None
        self.me: Me | None = None
        self.connection = "connecting"  # connected | lost | reconnecting
        self._retry: Timer | None = None

    # --- the connection -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.connection == "connected" and self.client is not None

    @property
    def api(self) -> ServerClient:
        """The current client; workers that find none fail as a lost connection."""
        if self.client is None:
            raise ConnectionFailed(f"{self.server.name}: not connected")
        return self.client

    def get_default_screen(self) -> JobsScreen:
        return JobsScreen()

    def on_mount(self) -> None:
        self._set_connection("connecting")
        self._connect(self.server)

    def _set_connection(self, state: str, detail: str = "") -> None:
        self.connection = state
        who = f"{self.me.user}@" if self.me and state == "connected" else ""
        self.sub_title = f"{who}{self.server.name} · {detail or state}"
        self.refresh_bindings()

    @work(thread=True, exclusive=True, exit_on_error=False, group="connect")
    def _connect(self, entry: ServerEntry) -> None:
        client: ServerClient | None = None
        try:
            client = self.connect_factory(entry)
            client.check_version()
            me = client.me()
        except Exception as exc:  # whatever the transport raised: retry later
            if client is not None and client is not self.client:
                client.close()
            text = str(exc) if isinstance(exc, NaiError) else f"{type(exc).__name__}: {exc}"
            self.post_message(ConnectionLost(entry.name, text))
            return
        self.post_message(Connected(entry, client, me))

    def on_connected(self, message: Connected) -> None:
        if message.server.name != self.server.name:
            message.client.close()  # an answer from the server we just left
            return
        if self.client is not None and self.client is not message.client:
            self.client.close()
        was_lost = self.backoff.retries > 0
        self.client, self.me = message.client, message.me
        self.backoff.reset()
        self._set_connection("connected")
        if was_lost:
            self.notify(f"Connected to {self.server.name} again", title="Connection")
        poll = getattr(self.screen, "poll", None)
        if callable(poll):
            poll()

    def on_connection_lost(self, message: ConnectionLost) -> None:
        if message.server != self.server.name:
            return
        delay = self.backoff.next() or self.backoff.policy.cap  # RECONNECTS: no end
        if self.backoff.retries == 1:
            self.notify(f"{message.error}\nRetrying in the background (R retries now).",
                        title=f"Cannot reach {self.server.name}", severity="warning",
                        timeout=8)
        self._set_connection("lost", f"unreachable, retry in {delay:.0f}s "
                                     f"(attempt {self.backoff.retries})")
        self._retry = self.set_timer(delay, self._reconnect)

    def _lost(self, error: str) -> None:
        """A call failed for want of a connection: stop polling and start retrying."""
        if self.connection != "connected":
            return  # already retrying
        self.post_message(ConnectionLost(self.server.name, error))
        self.connection = "lost"

    def _reconnect(self) -> None:
        if self.connection != "lost":
            return
        self._set_connection("reconnecting")
        self._connect(self.server)

    def action_reconnect(self) -> None:
        """Try to reach the server now instead of waiting for the next retry."""
        if self._retry is not None:
            self._retry.stop()
        self._reconnect()

    def switch_server(self, entry: ServerEntry) -> None:
        """Leave the current server for `entry`: back to a fresh jobs screen."""
        if entry.name == self.server.name and self.connected:
            return
        if self._retry is not None:
            self._retry.stop()
        old, self.client, self.me = self.client, None, None
        if old is not None:
            old.close()
        self.server = entry
        self.backoff.reset()
        while len(self.screen_stack) > 1:
            self.pop_screen()
        home = self.screen_stack[0]
        if isinstance(home, JobsScreen):
            home.reset()
        self._set_connection("connecting")
        self.notify(f"Connecting to {entry.name} ({entry.url})")
        self._connect(entry)

    # --- failures -----------------------------------------------------------------------

    def on_work_failed(self, message: WorkFailed) -> None:
        """The one place worker failures become something the user sees."""
        error = message.error
        if isinstance(error, ConnectionFailed):
            self._lost(str(error))
        elif isinstance(error, NaiError):
            self.notify(str(error), title="The server said no", severity="error", timeout=8)
        else:
            self.log.error(f"worker {message.what} failed", error)
            self.notify(f"{type(error).__name__}: {error}", title="Something went wrong",
                        severity="error", timeout=10)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.post_message(WorkFailed(event.worker.error, event.worker.name))

    # --- global actions -----------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "admin":
            return bool(self.me and self.me.admin and self.connected)
        if action == "reconnect":
            return self.connection == "lost"
        return True

    def action_help(self) -> None:
        """Show the keys of this screen."""
        from nai_tui.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_servers(self) -> None:
        """Choose among the configured servers."""
        from nai_tui.tui.screens.servers import ServersScreen

        if not isinstance(self.screen, ServersScreen):
            self.push_screen(ServersScreen())

    def action_admin(self) -> None:
        """Users, groups, quotas and drain (admins only)."""
        from nai_tui.tui.screens.admin import AdminScreen

        if not isinstance(self.screen, AdminScreen):
            self.push_screen(AdminScreen())

    def action_services(self) -> None:
        """The services: replicas, request metrics, logs; stop, update, forward."""
        from nai_tui.tui.screens.services import ServicesScreen

        if not isinstance(self.screen, ServicesScreen):
            self.push_screen(ServicesScreen())

    def open_registry(self, kind: str) -> None:
        """Show the datasets or the models (kind "dataset" or "model")."""
        from nai_tui.tui.screens.registry import RegistryScreen

        screen = self.screen
        if isinstance(screen, RegistryScreen):
            if screen.kind == kind:
                return
            self.pop_screen()  # one registry screen at a time: models replace datasets
        self.push_screen(RegistryScreen(kind))

    def on_unmount(self) -> None:
        if self.client is not None:
            self.client.close()


def run(server_name: str | None = None) -> int:
    """`nai` without a command: open the TUI on the chosen server."""
    try:
        config = ClientConfig.load()
        entry = config.choose(server_name)
    except NaiError as exc:
        print(f"nai: {exc}", file=sys.stderr)  # as the batch CLI's err()
        return 1
    app = NaiApp(connect_local_first, config=config, server=entry)
    app.run()
    return app.return_code or 0
