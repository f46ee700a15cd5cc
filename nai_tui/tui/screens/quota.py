"""`QuotaScreen`: edit the limits of a user or a group."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from nai_server.protocol import Quota
from nai_tui.tui.screens.base import NaiModal


def _number(text: str, kind: type[int] | type[float]) -> int | float | None:
    text = text.strip()
    return kind(text) if text else None


class QuotaScreen(NaiModal[Quota | None]):
    """Empty fields mean no limit. Dismisses with the new Quota, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel"),
                Binding("ctrl+s", "save", "Save")]

    def __init__(self, what: str, quota: Quota) -> None:
        super().__init__()
        self.what, self.quota = what, quota

    def compose(self) -> ComposeResult:
        q = self.quota
        with Vertical(classes="dialog"):
            yield Label(f"Quota of {self.what}", classes="dialog-title")
            with Horizontal(classes="form-row"):
                yield Label("max GPUs at once", classes="form-label")
                yield Input("" if q.max_gpus is None else str(q.max_gpus), type="integer",
                            placeholder="no limit", id="max-gpus", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("GPU hours / period", classes="form-label")
                yield Input("" if q.gpu_hours is None else f"{q.gpu_hours:g}", type="number",
                            placeholder="no limit", id="gpu-hours", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("period (days)", classes="form-label")
                yield Input(str(q.period_days), type="integer", id="period", compact=True)
            yield Static("empty: no limit · ctrl+s saves · escape cancels",
                         classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        try:
            gpus = _number(self.query_one("#max-gpus", Input).value, int)
            max_gpus = None if gpus is None else int(gpus)
            hours = _number(self.query_one("#gpu-hours", Input).value, float)
            period = _number(self.query_one("#period", Input).value, int) or 30
            quota = Quota(max_gpus=max_gpus, gpu_hours=hours, period_days=int(period))
        except ValueError as exc:
            self.app.notify(f"Not a valid quota: {exc}", severity="error")
            return
        self.dismiss(quota)
