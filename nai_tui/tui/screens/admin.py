"""`AdminScreen` (admins only): users, groups, their quotas, and draining the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Header, Label, Switch, TabbedContent, TabPane

from nai_server.protocol import ApiError, Quota
from nai_server.protocol.usage import UsageReport
from nai_tui.remote.client import ServerClient
from nai_tui.remote.usage import read_usage
from nai_tui.tui.messages import AccountsLoaded
from nai_tui.tui.screens.base import NaiScreen
from nai_tui.tui.screens.confirm import ConfirmScreen
from nai_tui.tui.screens.prompt import PromptScreen
from nai_tui.tui.screens.quota import QuotaScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.sized_table import fill
from nai_tui.tui.widgets.usage import USAGE_HEADERS, usage_rows


def quota_text(quota: Quota) -> str:
    gpus = "any GPUs" if quota.max_gpus is None else f"≤{quota.max_gpus} GPUs"
    hours = "" if quota.gpu_hours is None else \
        f", {quota.gpu_hours:g} GPU-h / {quota.period_days} d"
    return gpus + hours


USER_HEADERS = ("USER", "UID", "ADMIN", "GROUPS", "QUOTA")
GROUP_HEADERS = ("GROUP", "MEMBERS", "QUOTA")

class AdminScreen(NaiScreen):
    """Changes go to the server at once; the tables reload after each."""

    TITLE = "Admin"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to the jobs"),
        Binding("a", "add_user", "User+", tooltip="Register a unix user"),
        Binding("x", "remove_user", "User-", tooltip="Unregister the selected user"),
        Binding("g", "add_group", "Group+", tooltip="Create a group"),
        Binding("m", "add_member", "Member+", tooltip="Add a user to the selected group"),
        Binding("e", "edit_quota", "Quota", tooltip="Edit the selected user's or group's "
                "quota"),
        Binding("d", "toggle_drain", "Drain", tooltip="Drain the server, or open it again"),
        Binding("u", "usage", "Usage", show=False,
                tooltip="GPU use per user and group: fair-share standing, quota use"),
        Binding("r", "reload", "Reload", show=False, tooltip="Reload users and groups"),
    ]

    class Changed(Message):
        """An admin change went through."""

        def __init__(self, what: str) -> None:
            super().__init__()
            self.what = what

    def __init__(self) -> None:
        super().__init__()
        self.accounts: AccountsLoaded | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="drain-row"):
            yield Label("Drain (no new job starts; running ones finish)", id="drain-label")
            yield Switch(False, id="drain")
        with TabbedContent(initial="users", id="admin-tabs"):
            with TabPane("Users", id="users"):
                yield DataTable(id="users-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Groups", id="groups"):
                yield DataTable(id="groups-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Usage", id="usage"):
                yield DataTable(id="usage-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        fill(self.query_one("#users-table", DataTable), USER_HEADERS, [], [])
        fill(self.query_one("#groups-table", DataTable), GROUP_HEADERS, [], [])
        fill(self.query_one("#usage-table", DataTable), USAGE_HEADERS, [], [])
        self.query_one("#users-table").focus()
        self.action_reload()

    # --- loading ------------------------------------------------------------------------

    def action_usage(self) -> None:
        """Show the Usage tab: each user's and group's GPU use and fair-share standing."""
        self.query_one("#admin-tabs", TabbedContent).active = "usage"
        self.query_one("#usage-table").focus()

    def action_reload(self) -> None:
        """Reload users, groups and the drain flag."""
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _load(self) -> None:
        client = self.nai.api
        self.post_message(AccountsLoaded(client.users(), client.groups(), client.drained()))
        try:
            self.post_message(self.UsageLoaded(read_usage(client)))
        except ApiError as exc:  # an older server has no usage to show
            self.post_message(self.UsageLoaded(None, str(exc)))

    class UsageLoaded(Message):
        def __init__(self, report: UsageReport | None, problem: str = "") -> None:
            super().__init__()
            self.report, self.problem = report, problem

    def on_admin_screen_usage_loaded(self, message: UsageLoaded) -> None:
        table = self.query_one("#usage-table", DataTable)
        rows = usage_rows(message.report) if message.report else []
        fill(table, USAGE_HEADERS, rows, [f"{r[0]}:{r[1]}" for r in rows])
        pane = self.query_one("#usage", TabPane)
        pane.border_subtitle = message.problem

    def on_accounts_loaded(self, message: AccountsLoaded) -> None:
        self.accounts = message
        users = self.query_one("#users-table", DataTable)
        row = users.cursor_row
        fill(users, USER_HEADERS, [
            [u.name, "" if u.uid is None else str(u.uid),
             Text("admin", style="bold") if u.admin else "", ", ".join(u.groups),
             quota_text(u.quota)] for u in message.users], [u.name for u in message.users])
        users.move_cursor(row=row)
        groups = self.query_one("#groups-table", DataTable)
        row = groups.cursor_row
        fill(groups, GROUP_HEADERS, [
            [g.name, ", ".join(g.members) or "-", quota_text(g.quota)] for g in message.groups],
             [g.name for g in message.groups])
        groups.move_cursor(row=row)
        drain = self.query_one("#drain", Switch)
        with drain.prevent(Switch.Changed):
            drain.value = message.drained

    # --- changes ------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="change")
    def _change(self, what: str, call: Callable[[ServerClient], Any]) -> None:
        call(self.nai.api)
        self.post_message(self.Changed(what))

    def on_admin_screen_changed(self, message: Changed) -> None:
        self.notify(message.what)
        self.action_reload()

    def _selected(self, table_id: str) -> str | None:
        table = self.query_one(table_id, DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_add_user(self) -> None:
        """Register a unix user with the server."""
        def add(name: str | None) -> None:
            if name:
                self._change(f"Added user {name}", lambda c: c.add_user(name))
        self.app.push_screen(PromptScreen("Add user", "unix user name"), add)

    def action_remove_user(self) -> None:
        """Unregister the selected user (after a confirmation)."""
        name = self._selected("#users-table")
        if name is None:
            return

        def remove(yes: bool | None) -> None:
            if yes:
                self._change(f"Removed user {name}", lambda c: c.remove_user(name))
        self.app.push_screen(ConfirmScreen(f"Remove user {name}?",
                                           "Their jobs stay; they can no longer submit.",
                                           yes="Remove"), remove)

    def action_add_group(self) -> None:
        """Create a group."""
        def add(name: str | None) -> None:
            if name:
                self._change(f"Added group {name}", lambda c: c.add_group(name))
        self.app.push_screen(PromptScreen("Add group", "group name"), add)

    def action_add_member(self) -> None:
        """Add a user to the selected group."""
        group = self._selected("#groups-table")
        if group is None:
            self.notify("Select a group first (Groups tab)", severity="warning")
            return

        def add(user: str | None) -> None:
            if user:
                self._change(f"Added {user} to {group}", lambda c: c.add_member(group, user))
        self.app.push_screen(PromptScreen(f"Add a member to {group}", "user name"), add)

    def action_edit_quota(self) -> None:
        """Edit the quota of the selected user or group."""
        if self.accounts is None:
            return
        on_groups = self.query_one(TabbedContent).active == "groups"
        kind = "groups" if on_groups else "users"
        name = self._selected(f"#{kind}-table")
        items = self.accounts.groups if on_groups else self.accounts.users
        found = next((i for i in items if i.name == name), None)
        if found is None:
            return

        def save(quota: Quota | None) -> None:
            if quota is not None:
                self._change(f"Quota of {found.name}: {quota_text(quota)}",
                             lambda c: c.set_quota(kind, found.name, quota))
        self.app.push_screen(QuotaScreen(f"{kind[:-1]} {found.name}", found.quota), save)

    def action_toggle_drain(self) -> None:
        """Drain the server, or open it again."""
        switch = self.query_one("#drain", Switch)
        switch.toggle()

    def on_switch_changed(self, event: Switch.Changed) -> None:
        drained = event.value
        self._change("Server drained: queued jobs wait" if drained else "Server open again",
                      lambda c: c.drain(drained))

    def action_back(self) -> None:
        """Back to the jobs."""
        self.dismiss()
