"""`PromptScreen`: ask for one line of text (a user name, a group name)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from nai_tui.tui.screens.base import NaiModal


class PromptScreen(NaiModal[str | None]):
    """Dismisses with the text on enter, or None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, placeholder: str = "", hint: str = "",
                 value: str = "") -> None:
        super().__init__()
        self.question, self.placeholder, self.hint = question, placeholder, hint
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static(self.hint or "enter to confirm, escape to cancel",
                         classes="dialog-detail")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value:
            self.dismiss(value)
