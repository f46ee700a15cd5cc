"""`RegistryPushScreen`: choose a folder, a name, a tag and a description to push as
the next version of a dataset or model (a new one when the name is new)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DirectoryTree, Input, Label, Static

from nai_server.protocol import TAG_PATTERN
from nai_tui.tui.screens.base import NaiModal
from nai_tui.tui.widgets.folder_tree import FolderTree

NAME_HINT = "letters, digits, . _ -"


@dataclass(frozen=True)
class PushRequest:
    """What to push: `folder` as the next version of `name`."""

    name: str
    folder: Path
    tag: str | None
    description: str


def check(name: str, folder: Path, tag: str) -> str:
    """What is wrong with the form, or ""."""
    if not name:
        return "give the name (a new name creates it)"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if tag and not re.fullmatch(TAG_PATTERN, tag):
        return f"tag {tag!r}: a letter, then letters, digits, . _ -"
    return ""


class RegistryPushScreen(NaiModal[PushRequest | None]):
    """Ctrl+S pushes; escape cancels. Dismisses with a `PushRequest` or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "push", "Push", tooltip="Upload the folder as the next version"),
        Binding("escape", "dismiss(None)", "Cancel", tooltip="Back without pushing"),
    ]

    def __init__(self, kind: str, name: str = "", folder: Path | None = None) -> None:
        super().__init__()
        self.kind, self.entry_name = kind, name
        self.folder = (folder or Path.cwd()).absolute()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog push"):
            yield Label(f"Push a folder as a {self.kind} version", classes="dialog-title")
            with Horizontal(id="push-body"):
                yield FolderTree(self.folder, id="push-tree")
                with VerticalScroll(id="push-form"):
                    for label, field, value, hint in (
                            ("Name", "push-name", self.entry_name, NAME_HINT),
                            ("Folder", "push-folder", str(self.folder), ""),
                            ("Tag", "push-tag", "", "optional, e.g. best"),
                            ("About", "push-description", "", "optional description")):
                        with Horizontal(classes="form-row"):
                            yield Label(label, classes="form-label")
                            yield Input(value, id=field, placeholder=hint, compact=True)
                    yield Static("", id="push-problem")
                    yield Button("Push (ctrl+s)", variant="primary", id="push",
                                 compact=True)
            yield Static("Only files the server lacks travel.", classes="dialog-detail")

    def on_mount(self) -> None:
        self.query_one("#push-folder" if self.entry_name else "#push-name", Input).focus()

    def on_directory_tree_directory_selected(
            self, event: DirectoryTree.DirectorySelected) -> None:
        event.stop()
        self.query_one("#push-folder", Input).value = str(event.path)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "push":
            self.action_push()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_push()

    def action_push(self) -> None:
        """Check the form and hand it back."""
        name = self.query_one("#push-name", Input).value.strip()
        folder = Path(self.query_one("#push-folder", Input).value.strip()).expanduser()
        tag = self.query_one("#push-tag", Input).value.strip()
        problem = check(name, folder, tag)
        if problem:
            self.query_one("#push-problem", Static).update(Text(problem, style="bold red"))
            return
        self.dismiss(PushRequest(name, folder.absolute(), tag or None,
                                 self.query_one("#push-description", Input).value.strip()))
