"""`Footer`: Textual's footer, recomposed only when what it shows changes.

Textual's footer rebuilds all its keys whenever the screen's bindings may have
changed (focus moves, the screen stack changes, the app refreshes its bindings), and
each rebuild runs ahead of the screen's messages. At start-up that is six rebuilds in
a row, holding up the first jobs by a tenth of a second; nearly all of them would
show the same keys.

On a narrow terminal (80 columns) the keys that do not fit are left out from the
screen's end of the list, never Quit, Admin or Help (`KEEP`): those stay, and `?`
lists the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.widgets import Footer as TextualFooter
from textual.widgets._footer import FooterKey

if TYPE_CHECKING:
    from textual.screen import Screen

Shown = tuple[tuple[object, ...], ...]
KEEP = frozenset({"app.quit", "app.admin", "app.help"})  # shown at any width
PALETTE_WIDTH = 13  # "▏^p palette " docked on the right


def fitting(keys: list[tuple[str, str]], width: int) -> tuple[list[int], bool]:
    """Which of the keys (display, label) fit in `width` cells, by index, and whether
    compactly: all of them if they fit, else the ones in `KEEP`'s place first and the
    others in order while they fit. The labels passed in for `KEEP` end with "!"."""
    roomy = [len(key) + len(label) + 3 for key, label in keys]
    if sum(roomy) <= width:
        return list(range(len(keys))), False
    tight = [len(key) + len(label.rstrip("!")) + 2 for key, label in keys]
    left = width - sum(n for n, (_, label) in zip(tight, keys, strict=True)
                       if label.endswith("!"))
    chosen = []
    for i, (_, label) in enumerate(keys):
        if label.endswith("!"):
            chosen.append(i)
        elif tight[i] <= left:
            chosen.append(i)
            left -= tight[i]
    return chosen, True


class Footer(TextualFooter):
    """A drop-in `textual.widgets.Footer` that skips rebuilds showing the same keys."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: Shown | None = None

    @staticmethod
    def shown(screen: Screen[object]) -> Shown:
        """What a footer on `screen` shows: its keys, their labels, whether enabled."""
        palette = screen.app.COMMAND_PALETTE_BINDING
        width = screen.app.size.width  # which keys fit depends on it
        return tuple((binding.key, binding.action, binding.description, enabled, tooltip,
                      width)
                     for key, (_, binding, enabled, tooltip) in
                     screen.active_bindings.items() if binding.show or key == palette)

    def bindings_changed(self, screen: Screen[object]) -> None:
        if not (screen.app.app_focus and self.is_attached and screen is self.screen):
            super().bindings_changed(screen)  # nothing is rebuilt: nothing to remember
            return
        shown = self.shown(screen)
        if shown == self._shown:
            return
        self._shown = shown
        super().bindings_changed(screen)

    def on_resize(self) -> None:
        if self.screen.app.app_focus and self._shown is not None:
            self.bindings_changed(self.screen)

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        app = self.app
        shown = [(binding, enabled, tooltip) for _, binding, enabled, tooltip in
                 self.screen.active_bindings.values() if binding.show]
        keys = [(app.get_key_display(binding),
                 binding.description + ("!" if f"app.{binding.action}" in KEEP or
                                        binding.action in KEEP else ""))
                for binding, _, _ in shown]
        chosen, compact = fitting(keys, app.size.width - PALETTE_WIDTH)
        self.compact = compact
        for i in chosen:
            binding, enabled, tooltip = shown[i]
            yield FooterKey(binding.key, keys[i][0], binding.description, binding.action,
                            disabled=not enabled, tooltip=tooltip).data_bind(
                compact=TextualFooter.compact)
        try:
            _, binding, enabled, _ = self.screen.active_bindings[app.COMMAND_PALETTE_BINDING]
        except KeyError:
            return
        yield FooterKey(binding.key, app.get_key_display(binding), binding.description,
                        binding.action, classes="-command-palette", disabled=not enabled,
                        tooltip=binding.tooltip or binding.description)
