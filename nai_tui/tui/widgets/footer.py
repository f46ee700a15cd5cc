"""`Footer`: Textual's footer, recomposed only when what it shows changes.

Textual's footer rebuilds all its keys whenever the screen's bindings may have
changed (focus moves, the screen stack changes, the app refreshes its bindings), and
each rebuild runs ahead of the screen's messages. At start-up that is six rebuilds in
a row, holding up the first jobs by a tenth of a second; nearly all of them would
show the same keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Footer as TextualFooter

if TYPE_CHECKING:
    from textual.screen import Screen

Shown = tuple[tuple[str, str, str, bool, str], ...]


class Footer(TextualFooter):
    """A drop-in `textual.widgets.Footer` that skips rebuilds showing the same keys."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: Shown | None = None

    @staticmethod
    def shown(screen: Screen[object]) -> Shown:
        """What a footer on `screen` shows: its keys, their labels, whether enabled."""
        palette = screen.app.COMMAND_PALETTE_BINDING
        return tuple((binding.key, binding.action, binding.description, enabled, tooltip)
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
