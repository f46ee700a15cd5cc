"""`HelpScreen`: every key of the screen underneath, and what else there is to know."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static

from nai_tui.tui.screens.base import NaiModal

ABOUT = ("ctrl+p opens the command palette: every action, every configured server and the "
         "jobs on screen, by name. The mouse works too: click a row, a tab, a GPU. "
         "Job tables refresh every two seconds without moving your cursor.")


def nai_actions(node: object) -> set[str]:
    """The actions that nai's own classes bind on `node` (not Textual's built-ins)."""
    actions: set[str] = set()
    for cls in type(node).__mro__:
        if cls.__module__.startswith("nai_tui"):
            for binding in cls.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding):
                    actions.add(binding.action)
    return actions


def key_table(screen: Screen[object]) -> Table:
    """The bindings nai makes on `screen` (every key of each action): this screen's
    and its widgets' first, then the global ones. Textual's own are left out."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", justify="right", min_width=9)
    table.add_column()
    app = screen.app
    rows: dict[bool, dict[str, tuple[list[str], str]]] = {False: {}, True: {}}
    ours: dict[int, set[str]] = {}
    for active in screen.active_bindings.values():
        binding = active.binding
        description = binding.tooltip or binding.description
        mine = ours.setdefault(id(active.node), nai_actions(active.node))
        if not description or (binding.action not in mine
                                and binding.key != app.COMMAND_PALETTE_BINDING):
            continue
        group = rows[isinstance(active.node, App)]
        keys, _ = group.setdefault(binding.action, ([], description))
        shown = app.get_key_display(binding)
        if shown not in keys:
            keys.append(shown)
    for is_global, title in ((False, screen.title or screen.__class__.__name__),
                             (True, "everywhere")):
        if rows[is_global]:
            table.add_row("", Text(title, style="bold underline"))
            for keys, description in rows[is_global].values():
                table.add_row(" ".join(keys), description)
    return table


class HelpScreen(NaiModal[None]):
    """Press ?, escape or q to close."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss(None)", "Close")]

    def __init__(self, screen: Screen[object]) -> None:
        super().__init__()
        self.under = screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Label("Keys", classes="dialog-title")
            yield Static(key_table(self.under), id="help-keys")
            yield Static(ABOUT, classes="dialog-detail")
