"""`SubmitScreen`: pick a folder, check what its nai.yaml asks for, adjust GPUs and
the time limit, watch the code sync, and land on the new job."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import (
    Button,
    DirectoryTree,
    Header,
    Input,
    Label,
    Select,
    Static,
)
from textual.worker import Worker, WorkerState

from nai_tui.tui.messages import JobSubmitted, TransferProgressed
from nai_tui.tui.screens.base import NaiScreen
from nai_tui.tui.widgets.folder_tree import FolderTree
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.transfer_bar import TransferBar

SPEC_FILE = "nai.yaml"
REGISTRY_NOTE = ("Dataset and model: name@latest takes the newest version when the job "
                 "is submitted; a name picked lists its versions under it to pick from.")
REGISTRY_KINDS = ("dataset", "model")


Versions = list[tuple[int, str | None]]  # (number, tag), newest first


def ref_choices(names: list[str], keep: str | None,
                versions: dict[str, Versions] | None = None) -> list[tuple[str, str]]:
    """Select options (label, ref): `name@latest` for each name, under it each of its
    versions known here (`name@3 (best)`: a name's versions are read once it is
    picked), plus `keep` (nai.yaml's choice, say `cifar10@2`) when it is not one of
    them."""
    choices = []
    for name in names:
        choices.append((f"{name}@latest", f"{name}@latest"))
        choices += [(f"  {name}@{number}" + (f" ({tag})" if tag else ""), f"{name}@{number}")
                    for number, tag in (versions or {}).get(name, [])]
    if keep and keep not in {ref for _, ref in choices}:
        choices.insert(0, (keep, keep))
    return choices


def read_spec(folder: Path) -> tuple[str | None, dict[str, Any], str]:
    """(nai.yaml text, its fields, a problem to show or "")."""
    path = folder / SPEC_FILE
    if not folder.is_dir():
        return None, {}, f"{folder} is not a folder"
    if not path.is_file():
        return None, {}, (f"no {SPEC_FILE} in {folder}: write one (name, command, gpus, "
                          f"time_limit; see jobs/ for examples)")
    try:
        text = path.read_text()
        fields = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, {}, f"{path}: {exc}"
    if not isinstance(fields, dict):
        return None, {}, f"{path}: expected a mapping (name: …, command: …)"
    return text, fields, ""


def env_pairs(text: str) -> list[str]:
    """`A=1 B="two words"` → `["A=1", "B=two words"]` (raises ValueError when wrong)."""
    try:
        items = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"Env: {exc}") from None
    for item in items:
        key = item.partition("=")[0]
        if "=" not in item or not key:
            raise ValueError(f"Env: {item!r} is not KEY=VALUE")
    return items


def spec_summary(fields: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key in ("name", "command", "gpus", "time_limit", "gpu_memory", "priority"):
        if key in fields:
            table.add_row(key, Text(str(fields[key])))
    return table


class SubmitScreen(NaiScreen):
    """Ctrl+S submits; escape goes back."""

    TITLE = "Submit a job"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Submit", tooltip="Sync the folder and submit it"),
        Binding("escape", "back", "Back", tooltip="Back without submitting"),
        Binding("ctrl+o", "focus_folders", "Folders", tooltip="Browse for the job's folder"),
    ]

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.folder = (folder or Path.cwd()).absolute()
        self.spec_text: str | None = None
        self.fields: dict[str, Any] = {}
        self.busy = False
        self.registry_names: dict[str, list[str]] = {kind: [] for kind in REGISTRY_KINDS}
        self.registry_versions: dict[str, dict[str, Versions]] = {
            kind: {} for kind in REGISTRY_KINDS}

    class RegistriesListed(Message):
        """The names of the datasets and the models the user may read."""

        def __init__(self, names: dict[str, list[str]]) -> None:
            super().__init__()
            self.names = names

    class VersionsListed(Message):
        """The live versions of one dataset or model, newest first."""

        def __init__(self, kind: str, name: str, versions: Versions) -> None:
            super().__init__()
            self.kind, self.name, self.versions = kind, name, versions

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="submit-body"):
            # A job folder: show its siblings; any other folder: browse into it.
            yield FolderTree(self.folder.parent if (self.folder / SPEC_FILE).exists()
                             else self.folder, id="folder-tree")
            with VerticalScroll(id="submit-form"):
                with Horizontal(classes="form-row"):
                    yield Label("Folder", classes="form-label")
                    yield Input(str(self.folder), id="folder", compact=True)
                yield Static("", id="spec-summary")
                with Horizontal(classes="form-row"):
                    yield Label("Name", classes="form-label")
                    yield Input("", id="name", compact=True, placeholder="from nai.yaml")
                with Horizontal(classes="form-row"):
                    yield Label("Command", classes="form-label")
                    yield Input("", id="command", compact=True, placeholder="from nai.yaml")
                with Horizontal(classes="form-row"):
                    yield Label("Env", classes="form-label")
                    yield Input("", id="env", compact=True,
                                placeholder="KEY=VALUE … (added to nai.yaml's env)")
                with Horizontal(classes="form-row"):
                    yield Label("GPUs", classes="form-label")
                    yield Input("", type="integer", id="gpus", compact=True,
                                placeholder="from nai.yaml")
                with Horizontal(classes="form-row"):
                    yield Label("Time limit", classes="form-label")
                    yield Input("", id="time-limit", compact=True, placeholder="e.g. 2h, 30m")
                for kind in REGISTRY_KINDS:
                    with Horizontal(classes="form-row"):
                        yield Label(kind.capitalize(), classes="form-label")
                        yield Select[str]([], id=kind, compact=True, prompt="none")
                yield Static(REGISTRY_NOTE, classes="note")
                yield TransferBar()
                with Vertical(classes="form-buttons"):
                    yield Button("Submit (ctrl+s)", variant="primary", id="submit",
                                 compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load(self.folder)
        self.query_one("#folder", Input).focus()
        if self.nai.connected:
            self._list_registries()

    @work(thread=True, exclusive=True, exit_on_error=False, group="registries")
    def _list_registries(self) -> None:
        client = self.nai.api
        self.post_message(self.RegistriesListed({
            kind: [e.name for e in client.registry_list(kind) if e.latest is not None]
            for kind in REGISTRY_KINDS}))

    def on_submit_screen_registries_listed(self, message: RegistriesListed) -> None:
        self.registry_names = message.names
        for kind in REGISTRY_KINDS:
            self._fill(kind, keep_choice=True)

    def _fill(self, kind: str, *, keep_choice: bool = False) -> None:
        """Offer the known names plus nai.yaml's choice; select what the user chose
        (with `keep_choice`) or else nai.yaml's choice."""
        select: Select[str] = self.query_one(f"#{kind}", Select)
        chosen = select.value if keep_choice and not select.is_blank() else None
        wanted = self.fields.get(kind)
        spec = str(wanted) if wanted else None
        choices = ref_choices(self.registry_names[kind], spec, self.registry_versions[kind])
        if isinstance(chosen, str) and chosen not in {ref for _, ref in choices}:
            choices.insert(0, (chosen, chosen))
        select.set_options(choices)
        value = chosen if isinstance(chosen, str) else spec
        select.value = value if value else Select.NULL

    def on_select_changed(self, event: Select.Changed) -> None:
        """A dataset or model picked: offer its versions too (read once per name)."""
        kind = event.select.id or ""
        if kind not in REGISTRY_KINDS or not isinstance(event.value, str):
            return
        name = event.value.partition("@")[0]
        if name in self.registry_names[kind] and name not in self.registry_versions[kind]:
            self.registry_versions[kind][name] = []  # asked: not again
            self._list_versions(kind, name)

    @work(thread=True, exit_on_error=False, group="registries")
    def _list_versions(self, kind: str, name: str) -> None:
        entry = self.nai.api.registry_entry(kind, name)
        self.post_message(self.VersionsListed(kind, name, [
            (v.version, v.tag) for v in reversed(entry.versions) if not v.deleted]))

    def on_submit_screen_versions_listed(self, message: VersionsListed) -> None:
        self.registry_versions[message.kind][message.name] = message.versions
        self._fill(message.kind, keep_choice=True)

    def load(self, folder: Path) -> None:
        """Read the folder's nai.yaml and prefill the form from it."""
        self.folder = folder
        self.spec_text, self.fields, problem = read_spec(folder)
        summary = self.query_one("#spec-summary", Static)
        if problem:
            summary.update(Text(problem, style="bold red"))
        else:
            summary.update(spec_summary(self.fields))
        for key in ("name", "command"):
            self.query_one(f"#{key}", Input).value = str(self.fields.get(key) or "")
        self.query_one("#gpus", Input).value = str(self.fields.get("gpus", ""))
        self.query_one("#time-limit", Input).value = str(self.fields.get("time_limit", ""))
        self.query_one("#submit", Button).disabled = bool(problem)
        for kind in REGISTRY_KINDS:
            self._fill(kind)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "folder":
            folder = Path(event.value).expanduser()
            if folder != self.folder:
                self.load(folder.absolute())

    def on_directory_tree_directory_selected(
            self, event: DirectoryTree.DirectorySelected) -> None:
        self.query_one("#folder", Input).value = str(event.path)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()

    def action_focus_folders(self) -> None:
        """Browse for the job's folder."""
        self.query_one(FolderTree).focus()

    def action_back(self) -> None:
        """Back without submitting."""
        self.dismiss()

    def overrides(self) -> dict[str, Any]:
        """What the form changes relative to nai.yaml (raises ValueError when wrong)."""
        out: dict[str, Any] = {}
        for key in ("name", "command"):
            value = self.query_one(f"#{key}", Input).value.strip()
            if value and value != str(self.fields.get(key) or ""):
                out[key] = value
        env = env_pairs(self.query_one("#env", Input).value)
        if env:
            out["env"] = env
        gpus = self.query_one("#gpus", Input).value.strip()
        if gpus and gpus != str(self.fields.get("gpus", "")):
            if int(gpus) < 0:
                raise ValueError("GPUs: 0 or more")
            out["gpus"] = int(gpus)
        limit = self.query_one("#time-limit", Input).value.strip()
        if limit and limit != str(self.fields.get("time_limit", "")):
            out["time_limit"] = limit
        for kind in REGISTRY_KINDS:
            select: Select[str] = self.query_one(f"#{kind}", Select)
            chosen = None if select.is_blank() else str(select.value)
            if chosen != (str(self.fields[kind]) if self.fields.get(kind) else None):
                out[kind] = chosen
        return out

    def action_submit(self) -> None:
        """Sync the folder and submit it."""
        if self.busy:
            return
        if self.spec_text is None:
            self.notify(f"Nothing to submit: no readable {SPEC_FILE} in {self.folder}",
                        severity="error")
            return
        if not self.nai.connected:
            self.notify("Not connected: wait for the server to come back", severity="error")
            return
        try:
            overrides = self.overrides()
        except ValueError as exc:
            self.notify(f"Check the form: {exc}", severity="error")
            return
        self.busy = True
        self.query_one("#submit", Button).disabled = True
        self.query_one(TransferBar).begin(f"syncing {self.folder.name}")
        self._submit(self.folder, self.spec_text, overrides)

    @work(thread=True, exclusive=True, exit_on_error=False, group="submit")
    def _submit(self, folder: Path, spec_text: str, overrides: dict[str, Any]) -> None:
        client = self.nai.api
        tree = self.nai.transfers.push(
            client, folder,
            lambda what, done, total: self.post_message(TransferProgressed(done, total, what)))
        self.post_message(TransferProgressed(0, 0, "submitting"))
        job = client.submit(spec_yaml=spec_text, source=SPEC_FILE, overrides=overrides,
                            code_tree=tree)
        self.post_message(JobSubmitted(job))

    def on_transfer_progressed(self, message: TransferProgressed) -> None:
        bar = self.query_one(TransferBar)
        if message.total:
            bar.progress(message.label, message.done, message.total)
        else:
            bar.begin(message.label)

    def on_job_submitted(self, message: JobSubmitted) -> None:
        from nai_tui.tui.screens.job_detail import JobDetailScreen

        self.notify(f"Submitted job {message.job.id} ({message.job.name})")
        self.app.switch_screen(JobDetailScreen(message.job.id))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "submit" and event.state in (WorkerState.ERROR,
                                                               WorkerState.CANCELLED):
            self.busy = False
            self.query_one("#submit", Button).disabled = False
            self.query_one(TransferBar).finish()
