"""`TransferBar`: a progress bar with a label for syncs and downloads; hidden when
nothing moves."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from nai_server.protocol import format_size


class TransferBar(Horizontal):
    """Call `progress(what, done, total)` as bytes move, `finish()` at the end."""

    DEFAULT_CSS = """
    TransferBar {
        height: 1;
        display: none;
        padding: 0 1;
    }
    TransferBar.-active, TransferBar.-done {
        display: block;
    }
    TransferBar.-done > ProgressBar {
        display: none;
    }
    TransferBar.-done > Label {
        color: $text-success;
    }
    TransferBar > Label {
        width: auto;
        margin-right: 1;
    }
    """

    def compose(self) -> ComposeResult:
        yield Label("", id="transfer-label")
        yield ProgressBar(total=None, show_eta=False, id="transfer-progress")

    @property
    def active(self) -> bool:
        return self.has_class("-active")

    def begin(self, what: str) -> None:
        """Show an indeterminate bar for `what` (before the size is known)."""
        self.remove_class("-done")
        self.add_class("-active")
        self.query_one(Label).update(what)
        self.query_one(ProgressBar).update(total=None, progress=0)

    def progress(self, what: str, done: int, total: int | None) -> None:
        self.add_class("-active")
        self.query_one(Label).update(f"{what} {format_size(done)}" + (f" of {format_size(total)}"
                                                              if total else ""))
        self.query_one(ProgressBar).update(total=total or None, progress=done)

    def finish(self, done: str = "") -> None:
        """Hide the bar; with `done`, keep that line shown (where a pull went) until
        the next transfer."""
        # An indeterminate bar animates for as long as it exists, hidden or not.
        self.query_one(ProgressBar).update(total=1, progress=0)
        self.remove_class("-active")
        if done:
            self.query_one(Label).update(f"✓ {done}")
            self.add_class("-done")
