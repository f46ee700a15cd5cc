"""`RegistryScreen`: the datasets (or the models) this user may read, the versions of
the selected one, pushing a folder as a new version and pulling a version to a folder.
One class serves both kinds: they have the same calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Header, Static
from textual.worker import Worker, WorkerState

from nai_server.protocol import (
    Invalid,
    NotFound,
    RegistryEntry,
    RegistrySummary,
    RegistryVersion,
    format_size,
)
from nai_tui.remote.client import ServerClient
from nai_tui.tui.messages import TransferProgressed
from nai_tui.tui.ports import Progress
from nai_tui.tui.screens.base import NaiScreen
from nai_tui.tui.screens.registry_push import PushRequest
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.format import clip, kept_note
from nai_tui.tui.widgets.sized_table import fill
from nai_tui.tui.widgets.transfer_bar import TransferBar

KINDS = ("dataset", "model")


LIST_HEADERS = ("NAME", "OWNER", "READERS", "LATEST", "SIZE", "DESCRIPTION")
VERSION_HEADERS = ("VERSION", "TAG", "SIZE", "FILES", "CREATED", "BY", "USED BY JOBS", "")


def owner_text(owner: dict[str, str]) -> str:
    return f"group {owner['group']}" if "group" in owner else owner.get("user", "?")


def visibility_text(entry: RegistrySummary | RegistryEntry) -> str:
    groups = ", ".join(entry.shared_with_groups)
    if entry.visibility == "shared":
        return "everyone"
    return f"groups {groups}" if groups else "private"


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def push_version(client: ServerClient, kind: str, request: PushRequest,
                 tree_id: str) -> RegistryVersion:
    """Record an uploaded tree as the next version of `request.name` (created if new)."""
    try:
        client.registry_entry(kind, request.name)
    except NotFound:
        entry = client.registry_create(kind, request.name, tree_id, tag=request.tag,
                                       description=request.description)
        return entry.versions[-1]
    return client.registry_push(kind, request.name, tree_id, tag=request.tag,
                                description=request.description)


class RegistryScreen(NaiScreen):
    """Datasets or models: the list above, the selected one's versions below."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to the jobs"),
        Binding("u", "push", "Push", tooltip="Upload a folder as a new version"),
        Binding("p", "pull", "Pull", tooltip="Download the selected version to a folder"),
        Binding("y", "copy_ref", "Copy ref", show=False,
                tooltip="Copy the selected version as name@version"),
        Binding("r", "reload", "Reload", show=False, tooltip="Reload the list"),
    ]

    class Listed(Message):
        """The entries of this kind the user may read."""

        def __init__(self, entries: list[RegistrySummary]) -> None:
            super().__init__()
            self.entries = entries

    class Loaded(Message):
        """One entry with all its versions."""

        def __init__(self, entry: RegistryEntry) -> None:
            super().__init__()
            self.entry = entry

    class Pushed(Message):
        """A folder became a version."""

        def __init__(self, name: str, version: RegistryVersion) -> None:
            super().__init__()
            self.name, self.version = name, version

    class Pulled(Message):
        """A version landed in a folder."""

        def __init__(self, ref: str, dest: Path, files: int, skipped: int,
                     kept: tuple[str, ...] = ()) -> None:
            super().__init__()
            self.ref, self.dest, self.files, self.skipped = ref, dest, files, skipped
            self.kept = kept

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind: 'dataset' or 'model', not {kind!r}")
        super().__init__()
        self.kind = kind
        self.entries: dict[str, RegistrySummary] = {}
        self.entry: RegistryEntry | None = None
        self._select: str | None = None  # to put the cursor on once listed

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="registry-list", cursor_type="row", zebra_stripes=True)
        with Vertical(id="registry-detail"):
            yield Static("", id="registry-about")
            yield DataTable(id="registry-versions", cursor_type="row", zebra_stripes=True)
        yield TransferBar()
        yield Static("loading…", id="registry-status")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"{self.kind.capitalize()}s"
        fill(self.query_one("#registry-list", DataTable), LIST_HEADERS, [], [])
        fill(self.query_one("#registry-versions", DataTable), VERSION_HEADERS, [], [])
        self.query_one("#registry-list").focus()

    def on_screen_resume(self) -> None:
        self.action_reload()

    # --- loading ------------------------------------------------------------------------

    def action_reload(self) -> None:
        """Reload the list (and the selected entry's versions)."""
        if self.nai.connected:
            self._list()

    @work(thread=True, exclusive=True, exit_on_error=False, group="list")
    def _list(self) -> None:
        self.post_message(self.Listed(self.nai.api.registry_list(self.kind)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="entry")
    def _load(self, name: str) -> None:
        self.post_message(self.Loaded(self.nai.api.registry_entry(self.kind, name)))

    def on_registry_screen_listed(self, message: Listed) -> None:
        self.entries = {e.name: e for e in message.entries}
        table = self.query_one("#registry-list", DataTable)
        selected, self._select = self._select or self.selected_name, None
        rows: list[list[str | Text]] = []
        for e in message.entries:
            latest = "-" if e.latest is None else f"{e.latest}" + (
                f" ({e.latest_tag})" if e.latest_tag else "")
            rows.append([e.name, owner_text(e.owner), visibility_text(e), latest,
                         format_size(e.size), clip(e.description, 40)])
        fill(table, LIST_HEADERS, rows, [e.name for e in message.entries])
        if selected in self.entries:
            table.move_cursor(row=table.get_row_index(selected))
        status = f"{len(message.entries)} {self.kind}(s)"
        if not message.entries:
            status += f" · none yet: u pushes a folder as a new {self.kind}"
        self.query_one("#registry-status", Static).update(status)
        if self.selected_name is not None:
            self._load(self.selected_name)
        else:
            self._show(None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "registry-list" and event.row_key.value is not None:
            name = str(event.row_key.value)
            if self.entry is None or self.entry.name != name:
                self._load(name)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "registry-list":
            self.query_one("#registry-versions").focus()

    def on_registry_screen_loaded(self, message: Loaded) -> None:
        if message.entry.name == self.selected_name:
            self._show(message.entry)

    def _show(self, entry: RegistryEntry | None) -> None:
        previous = self.entry.name if self.entry else None
        self.entry = entry
        about = self.query_one("#registry-about", Static)
        table = self.query_one("#registry-versions", DataTable)
        row = table.cursor_row
        if entry is None:
            fill(table, VERSION_HEADERS, [], [])
            about.update("")
            return
        text = Text(f"{self.kind} {entry.name}", style="bold")
        text.append(f" · owner {owner_text(entry.owner)} · readers {visibility_text(entry)}")
        if entry.description:
            text.append(f"\n{entry.description}", style="dim")
        about.update(text)
        newest_first = list(reversed(entry.versions))
        fill(table, VERSION_HEADERS, [
            [str(v.version), v.tag or "", format_size(v.size), str(v.files),
             when(v.created_at), v.created_by, ", ".join(f"#{j}" for j in v.used_by) or "-",
             Text("removed, kept while in use", style="yellow") if v.deleted else ""]
            for v in newest_first], [v.version for v in newest_first])
        table.move_cursor(row=row if previous == entry.name else 0)

    # --- selection ----------------------------------------------------------------------

    @property
    def selected_name(self) -> str | None:
        table = self.query_one("#registry-list", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    @property
    def selected_version(self) -> RegistryVersion | None:
        """The version under the cursor of the versions table (newest by default)."""
        if self.entry is None or not self.entry.versions:
            return None
        table = self.query_one("#registry-versions", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((v for v in self.entry.versions if str(v.version) == key), None)

    def action_copy_ref(self) -> None:
        """Copy the selected version as name@version (for nai.yaml)."""
        version = self.selected_version
        if self.entry is not None and version is not None:
            ref = f"{self.entry.name}@{version.version}"
            self.app.copy_to_clipboard(ref)
            self.notify(f"Copied {ref}")

    def action_back(self) -> None:
        """Back to the jobs."""
        self.dismiss()

    # --- push and pull ------------------------------------------------------------------

    def action_push(self) -> None:
        """Upload a folder as the next version of the selected one, or a new one."""
        from nai_tui.tui.screens.registry_push import RegistryPushScreen

        if self._transfer_running():
            return

        def pushed(request: PushRequest | None) -> None:
            if request is not None:
                self.query_one(TransferBar).begin(f"syncing {request.folder.name}")
                self._push(request)

        self.app.push_screen(RegistryPushScreen(self.kind, self.selected_name or ""), pushed)

    @work(thread=True, exclusive=True, exit_on_error=False, group="push")
    def _push(self, request: PushRequest) -> None:
        client = self.nai.api
        tree = self.nai.transfers.push(client, request.folder, self._progress(""))
        self.post_message(TransferProgressed(0, 0, "recording the version"))
        self.post_message(self.Pushed(request.name,
                                      push_version(client, self.kind, request, tree)))

    def on_registry_screen_pushed(self, message: Pushed) -> None:
        self.query_one(TransferBar).finish()
        v = message.version
        if getattr(v, "unchanged", False):  # the server recorded nothing new
            self.notify(f"{message.name}: unchanged, still @{v.version} (the latest version "
                        f"holds exactly these files)", title=f"{self.kind} not pushed")
        else:
            self.notify(f"{message.name}@{v.version}" + (f" ({v.tag})" if v.tag else "") +
                        f": {v.files} files, {format_size(v.size)}", title=f"{self.kind} pushed")
        self.entry = None  # show the versions from the newest again
        self._select = message.name
        self.action_reload()

    def action_pull(self) -> None:
        """Download the selected version (the newest by default) into a folder."""
        from nai_tui.tui.screens.prompt import PromptScreen

        version = self.selected_version
        if self.entry is None or version is None:
            self.notify(f"Select a {self.kind} first", severity="warning")
            return
        if version.deleted:
            self.notify(f"{self.entry.name}@{version.version} was removed; it is kept only "
                        f"while jobs still use it", severity="warning")
            return
        if self._transfer_running():
            return
        name, number = self.entry.name, version.version

        def chosen(dest: str | None) -> None:
            if dest:
                self.query_one(TransferBar).begin(f"{name}@{number}: listing files")
                self._pull(name, number, Path(dest).expanduser().absolute())

        self.app.push_screen(PromptScreen(
            f"Pull {self.kind} {name}@{number} into", "a folder",
            "files already there are kept; enter to start, escape to cancel",
            value=str(Path.cwd() / name)), chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="pull")
    def _pull(self, name: str, number: int, dest: Path) -> None:
        client = self.nai.api
        version = client.registry_version(self.kind, name, str(number))
        if version.deleted:
            raise Invalid(f"{self.kind} {name}@{number} was removed meanwhile")
        ref = f"{name}@{number}"
        result = self.nai.transfers.pull(client, client.tree(version.tree_id), dest, "",
                                         self._progress(f"{ref}: "))
        self.post_message(self.Pulled(ref, dest, result.downloaded, result.skipped,
                                      result.kept))

    def on_registry_screen_pulled(self, message: Pulled) -> None:
        self.query_one(TransferBar).finish()
        skipped = f", {message.skipped} already there" if message.skipped else ""
        self.notify(f"{message.ref}: {message.files} file(s) downloaded{skipped} into "
                    f"{message.dest}" + kept_note(message.kept), title=f"{self.kind} pulled",
                    severity="warning" if message.kept else "information")

    def _progress(self, prefix: str) -> Progress:
        """A transfer's progress callback: posts `TransferProgressed` (from a thread)."""
        def report(what: str, done: int, total: int) -> None:
            self.post_message(TransferProgressed(done, total, f"{prefix}{what}"))
        return report

    def _transfer_running(self) -> bool:
        if self.query_one(TransferBar).active:
            self.notify("A transfer is already running", severity="warning")
            return True
        return False

    def on_transfer_progressed(self, message: TransferProgressed) -> None:
        bar = self.query_one(TransferBar)
        if message.total:
            bar.progress(message.label, message.done, message.total)
        else:
            bar.begin(message.label)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group in ("push", "pull") and event.state in (WorkerState.ERROR,
                                                                       WorkerState.CANCELLED):
            self.query_one(TransferBar).finish()

    def commands(self) -> list[tuple[str, Any]]:
        """Palette entries: show each entry of the list by name."""
        table = self.query_one("#registry-list", DataTable)
        return [(f"Show {self.kind} {name}",
                 lambda name=name: table.move_cursor(row=table.get_row_index(name)))
                for name in self.entries]
